"""The Transformer of "Attention Is All You Need" (Vaswani et al. 2017).

Read top to bottom: positional encoding, the feed-forward network, the encoder layer, the
decoder layer, then the model that embeds, stacks N of each and projects to the vocabulary.

The recurrent chain is gone: every position attends to every other in one step, so order must
be told to the model by adding a positional encoding to the token embeddings (lecture §02.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.config import TransformerConfig
from seqlab.models.attention import MultiHeadAttention
from seqlab.models.dropout import Dropout, relu_dropout, residual_dropout
from seqlab.models.interface import DecoderCache, EncoderOutput
from seqlab.models.layer_norm import LayerNorm, to_compute_dtype
from seqlab.models.linear import Linear, linear


class SinusoidalPositionalEncoding(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Fixed, not learned (the paper's choice): a buffer, so it is not saved in checkpoints.
    """

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32)[:, None]  # (P, 1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_positions, d_model)
        pe[:, 0::2] = torch.sin(position * inv_freq)
        pe[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)  # (P, C)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        return self.pe[start : start + length]  # (T, C)


class LearnedPositionalEmbedding(nn.Module):
    """One learned vector per position (the lecture's "one-hot position through an FC layer")."""

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_positions, d_model) * d_model**-0.5)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        return self.weight[start : start + length]  # (T, C)


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.linear1 = Linear(d_model, d_ff)
        self.linear2 = Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)  # (B, T, d_ff)
        if self.activation is F.relu:  # max(0, ·) and dropout in one pass
            return self.linear2(relu_dropout(h, self.dropout.p, self.training))  # (B, T, C)
        return self.linear2(self.dropout(self.activation(h)))  # (B, T, C)


class Sublayer(nn.Module):
    """Residual connection and LayerNorm around a sub-layer.

    post-LN (the paper): x = LayerNorm(x + Dropout(Sublayer(x)))
    pre-LN (option):     x = x + Dropout(Sublayer(LayerNorm(x)))
    """

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = LayerNorm(d_model)  # under bf16 autocast the residual stream stays bf16
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        p, training = self.dropout.p, self.training
        if self.pre_norm:
            return residual_dropout(x, sublayer(self.norm(x)), p, training)
        return self.norm(residual_dropout(x, sublayer(x), p, training))


class EncoderLayer(nn.Module):
    """Self-attention over the source (h_2 = Σ_i softmax(<h_2, h_i>) h_i), then the FFN."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        pre = cfg.layer_norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.attention_impl)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.attn_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.ffn_block = Sublayer(cfg.d_model, cfg.dropout, pre)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, S, C); src_mask: (B, 1, 1, S), True at real tokens, so <pad> keys get no weight."""
        x = self.attn_block(x, lambda h: self.self_attn(h, h, h, mask=src_mask)[0])
        return self.ffn_block(x, self.ffn)  # (B, S, C)


class DecoderLayer(nn.Module):
    """Masked self-attention, then encoder-decoder attention, then the FFN.

    "Read the sentence so far → look at what matters in the source → predict the next word."
    Self-attention is causal (s_4 = Σ_{i≤4} softmax(<s_4, s_i>) s_i; s_5 is the answer and must
    stay hidden); encoder-decoder attention takes Q from the decoder and K, V from the encoder.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        pre = cfg.layer_norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.attention_impl)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.attention_impl)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.self_attn_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.cross_attn_block = Sublayer(cfg.d_model, cfg.dropout, pre)
        self.ffn_block = Sublayer(cfg.d_model, cfg.dropout, pre)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """y: (B, T, C) target prefix states; memory: (B, S, C) encoder output; src_mask: (B, 1, 1, S).

        Target <pad> needs no key mask: padding sits after the last real token, so the causal
        mask already hides it from every real position (and outputs at <pad> are never scored).
        """
        y = self.self_attn_block(y, lambda s: self.self_attn(s, s, s, is_causal=True)[0])
        y = self.cross_attn_block(y, lambda s: self.cross_attn(s, memory, memory, mask=src_mask)[0])
        return self.ffn_block(y, self.ffn)  # (B, T, C)

    def step(self, y: torch.Tensor, self_kv: tuple | None, position: int, cross_kv: tuple, src_mask: torch.Tensor,
             kv_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One new position y (N, 1, C) after ``position`` cached ones: its K, V join them, so it
        attends to every earlier position (no mask needed: the future is not there yet); the
        encoder's K, V come precomputed. ``kv_rows``: where each row's cached K, V lie
        (:meth:`MultiHeadAttention.extend`)."""
        new_kv = None

        def attend_to_past(s: torch.Tensor) -> torch.Tensor:
            nonlocal new_kv
            out, new_kv = self.self_attn.extend(s, self_kv, position, kv_rows)
            return out

        y = self.self_attn_block(y, attend_to_past)
        y = self.cross_attn_block(y, lambda s: self.cross_attn(s, s, s, mask=src_mask, kv=cross_kv)[0])
        return self.ffn_block(y, self.ffn), new_kv  # (N, 1, C), this layer's K, V so far


class Transformer(nn.Module):
    """Encoder-decoder Transformer: embeddings + positions, N encoder and N decoder layers, output layer."""

    def __init__(self, cfg: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary for source and target")
        self.cfg = cfg
        self.pad_id = pad_id
        self.max_positions = cfg.max_positions
        self.tgt_embed = nn.Embedding(tgt_vocab_size, cfg.d_model, padding_idx=pad_id)
        self.src_embed = None if cfg.share_embeddings else nn.Embedding(src_vocab_size, cfg.d_model, padding_idx=pad_id)
        position_cls = SinusoidalPositionalEncoding if cfg.positional == "sinusoidal" else LearnedPositionalEmbedding
        self.positions = position_cls(cfg.d_model, cfg.max_positions)
        self.embed_dropout = Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        # Pre-LN leaves the residual stream un-normalised, so each stack ends with a LayerNorm.
        pre = cfg.layer_norm == "pre"
        self.encoder_norm = LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.decoder_norm = LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.output_proj = None if cfg.tie_output else Linear(cfg.d_model, tgt_vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform matrices, N(0, d^-1/2) embeddings with a zero <pad> row (as fairseq)."""
        for name, p in self.named_parameters():
            if p.dim() == 2 and "embed" not in name and "positions" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for emb in (self.src_embed, self.tgt_embed):
            if emb is not None:
                nn.init.normal_(emb.weight, std=self.cfg.d_model**-0.5)
                nn.init.zeros_(emb.weight[self.pad_id])

    def embed(self, tokens: torch.Tensor, table: nn.Embedding, start: int = 0) -> torch.Tensor:
        """Input embedding · √d_model + positional encoding (lecture §02.1.1-3), from position ``start``."""
        T = tokens.size(1)
        if start + T > self.max_positions:
            raise ValueError(f"sequence of {start + T} tokens is longer than model.max_positions ({self.max_positions})")
        x = table(tokens) * math.sqrt(self.cfg.d_model) + self.positions(T, start)  # (B, T, C)
        return self.embed_dropout(to_compute_dtype(x))  # the residual stream starts here (bf16 under bf16 autocast)

    def encode(self, src: torch.Tensor) -> EncoderOutput:
        """src: (B, S) token ids, right-padded with <pad> → memory (B, S, C)."""
        src_mask = src != self.pad_id  # (B, S)
        attn_mask = src_mask[:, None, None, :]  # (B, 1, 1, S): broadcast over heads and queries
        x = self.embed(src, self.src_embed if self.src_embed is not None else self.tgt_embed)
        for layer in self.encoder_layers:
            x = layer(x, attn_mask)
        return EncoderOutput(memory=self.encoder_norm(x), src_mask=src_mask)

    def decode(self, tgt_in: torch.Tensor, enc: EncoderOutput, features_only: bool = False) -> torch.Tensor:
        """tgt_in: (B, T) = <bos> + target shifted right → next-token logits (B, T, V), or with
        ``features_only`` the final hidden states (B, T, C) that the output layer would read."""
        y = self.embed(tgt_in, self.tgt_embed)
        attn_mask = enc.src_mask[:, None, None, :]  # (B, 1, 1, S)
        memory = enc.memory  # (B, S, C)
        if torch.is_autocast_enabled(memory.device.type):  # cast once, not again in every layer's K/V product
            memory = memory.to(torch.get_autocast_dtype(memory.device.type))
        for layer in self.decoder_layers:
            y = layer(y, memory, attn_mask)
        y = self.decoder_norm(y)  # (B, T, C)
        return y if features_only else self.project(y)  # (B, T, V)

    def output_weight(self) -> torch.Tensor | None:
        """The output layer's matrix (V, C), the target embeddings when tied (None once int8-quantized)."""
        if self.output_proj is None:
            return self.tgt_embed.weight
        return self.output_proj.weight if isinstance(self.output_proj, nn.Linear) else None

    def project(self, y: torch.Tensor) -> torch.Tensor:
        if self.output_proj is None:
            return linear(y, self.tgt_embed.weight)  # tied: ŷ = y Eᵀ, (B, T, V)
        return self.output_proj(y)  # (B, T, V)

    def decode_step(self, new_tokens: torch.Tensor, enc: EncoderOutput, cache: DecoderCache | None
                    ) -> tuple[torch.Tensor, DecoderCache]:
        """Incremental decoding: logits (N, V) for the newest token (N, 1), reusing the cached K/V."""
        if cache is None:  # the encoder's keys and values, once per sentence for every step
            memory = enc.memory[:: enc.rows_per_source].contiguous()  # (B, S, C): beams of a sentence share its K, V
            cross = [tuple(t.contiguous() for t in layer.cross_attn.project_kv(memory, memory))
                     for layer in self.decoder_layers]  # contiguous: each step's Q Kᵀ reads them as they are
            cache = DecoderCache(position=0, self_kv=[None] * len(self.decoder_layers), cross_kv=cross)
        y = self.embed(new_tokens, self.tgt_embed, start=cache.position)  # (N, 1, C)
        mask = enc.src_mask[:, None, None, :]  # (N, 1, 1, S)
        rows = cache.kv_rows
        if rows is not None:  # K, V read in place (beam search): each row's ancestors', then its own
            N = new_tokens.size(0)
            rows = torch.cat([rows, torch.arange(N, device=rows.device)[:, None]], dim=1)  # (N, position + 1)
        self_kv = []
        for layer, past, cross in zip(self.decoder_layers, cache.self_kv, cache.cross_kv):
            y, kv = layer.step(y, past, cache.position, cross, mask, rows)
            self_kv.append(kv)
        logits = self.project(self.decoder_norm(y))[:, -1]  # (N, V)
        return logits, DecoderCache(cache.position + new_tokens.size(1), self_kv, cache.cross_kv,
                                    spare_kv=cache.spare_kv, kv_rows=rows)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, features_only: bool = False) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position in one pass (or the hidden
        states, which the training loss multiplies by :meth:`output_weight` itself)."""
        return self.decode(tgt_in, self.encode(src), features_only)
