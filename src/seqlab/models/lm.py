"""Decoder-only language models: "next token prediction: GPT" (lecture §01).

Only the decoder is kept. Every position predicts the next token from the ones before it, so
the same masked self-attention as the Transformer decoder (s_4 sees s_1 … s_4, never s_5) is
all there is; there is no source and no encoder-decoder attention.

* :class:`GPT` (Radford et al. 2018, 2019): token + learned position embeddings, N pre-LN blocks
  of causal multi-head self-attention and an MLP, a final LayerNorm, output tied to the
  embedding matrix.
* :class:`RNNLM`: the same next-token training with a recurrent network, ŷ_t = h_t W_y + b_y.

Both keep the encode/decode contract of :mod:`seqlab.models.interface` with nothing to encode,
so the one training loop, the one search module and sampling serve them as they serve
translation models.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seqlab.config import GPTConfig, RNNLMConfig
from seqlab.models.attention import MultiHeadAttention
from seqlab.models.dropout import Dropout
from seqlab.models.interface import DecoderCache
from seqlab.models.layer_norm import LayerNorm, to_compute_dtype
from seqlab.models.linear import Linear, linear
from seqlab.models.seq2seq import RNNDecoder
from seqlab.models.transformer import FeedForward, Sublayer


class Block(nn.Module):
    """x = x + Attn(LN(x)) with a causal mask, then x = x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, 0.0, cfg.attention_impl)
        self.mlp = FeedForward(cfg.d_model, cfg.d_ff, 0.0, "gelu")
        self.attn_block = Sublayer(cfg.d_model, cfg.dropout, pre_norm=True)
        self.mlp_block = Sublayer(cfg.d_model, cfg.dropout, pre_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_block(x, lambda h: self.attn(h, h, h, is_causal=True)[0])  # (B, T, C)
        return self.mlp_block(x, self.mlp)  # (B, T, C)

    def step(self, x: torch.Tensor, past: tuple | None, position: int
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """New positions x (N, t, C) after the ``position`` cached ones: their K, V join the cache."""
        new_kv = None

        def attend(h: torch.Tensor) -> torch.Tensor:
            nonlocal new_kv
            out, new_kv = self.attn.extend(h, past, position)
            return out

        x = self.attn_block(x, attend)
        return self.mlp_block(x, self.mlp), new_kv


class GPT(nn.Module):
    """Decoder-only Transformer language model."""

    def __init__(self, cfg: GPTConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg, self.pad_id, self.max_positions = cfg, pad_id, cfg.max_positions
        self.tok_embed = nn.Embedding(tgt_vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = LayerNorm(cfg.d_model)
        self.head = None if cfg.tie_output else Linear(cfg.d_model, tgt_vocab_size, bias=False)
        # GPT-2's initialisation: N(0, 0.02), with the projections into the residual stream scaled
        # down by 1/√(2·n_layers) so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("out_proj.weight", "linear2.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def encode(self, src: torch.Tensor | None) -> None:
        return None  # a decoder-only model has no source to read

    def decode(self, tokens: torch.Tensor, enc: None = None, features_only: bool = False) -> torch.Tensor:
        """tokens (B, T) = <bos> + text so far → next-token logits (B, T, V) (or, with
        ``features_only``, the final hidden states (B, T, C))."""
        T = tokens.size(1)
        if T > self.max_positions:
            raise ValueError(f"sequence of {T} tokens is longer than model.max_positions ({self.max_positions})")
        positions = torch.arange(T, device=tokens.device)
        x = self.drop(to_compute_dtype(self.tok_embed(tokens) + self.pos_embed(positions)))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)  # (B, T, C)
        return x if features_only else self.project(x)  # (B, T, V)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.tok_embed.weight) if self.head is None else self.head(x)  # ŷ = x Eᵀ when tied

    def output_weight(self) -> torch.Tensor | None:
        """The output layer's matrix (V, C), the token embeddings when tied (None once int8-quantized)."""
        if self.head is None:
            return self.tok_embed.weight
        return self.head.weight if isinstance(self.head, nn.Linear) else None

    def decode_step(self, new_tokens: torch.Tensor, enc: None, cache: DecoderCache | None
                    ) -> tuple[torch.Tensor, DecoderCache]:
        """Logits (N, V) for the last of ``new_tokens`` (N, t), after the cached positions."""
        cache = cache or DecoderCache(position=0, self_kv=[None] * len(self.blocks))
        T = new_tokens.size(1)
        if cache.position + T > self.max_positions:
            raise ValueError(f"sequence of {cache.position + T} tokens is longer than model.max_positions "
                             f"({self.max_positions})")
        positions = torch.arange(cache.position, cache.position + T, device=new_tokens.device)
        x = self.drop(to_compute_dtype(self.tok_embed(new_tokens) + self.pos_embed(positions)))  # (N, t, C)
        kvs = []
        for block, past in zip(self.blocks, cache.self_kv):
            x, kv = block.step(x, past, cache.position)
            kvs.append(kv)
        x = self.norm(x[:, -1])
        logits = self.project(x)  # (N, V)
        return logits, DecoderCache(cache.position + T, kvs, spare_kv=cache.spare_kv)

    def forward(self, src: torch.Tensor | None, tgt_in: torch.Tensor, features_only: bool = False) -> torch.Tensor:
        return self.decode(tgt_in, features_only=features_only)


class RNNLM(nn.Module):
    """Recurrent language model: h_t = RNN(x_t, h_{t-1}), ŷ_t = h_t W_y + b_y."""

    def __init__(self, cfg: RNNLMConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg, self.pad_id, self.max_positions = cfg, pad_id, cfg.max_positions
        self.decoder = RNNDecoder(cfg.cell, tgt_vocab_size, cfg.embed_dim, cfg.hidden_size, cfg.n_layers,
                                  cfg.dropout, tie_output=cfg.tie_output, input_readout=False, pad_id=pad_id)

    def encode(self, src: torch.Tensor | None) -> None:
        return None

    def decode(self, tokens: torch.Tensor, enc: None = None) -> torch.Tensor:
        """tokens (B, T) → next-token logits (B, T, V); the recurrence starts from h_0 = 0."""
        return self.decoder(tokens)[0]

    def decode_step(self, new_tokens: torch.Tensor, enc: None, cache: DecoderCache | None
                    ) -> tuple[torch.Tensor, DecoderCache]:
        """The RNN carries its state: the cache is h (and c) after the last token read."""
        return self.decoder.step(new_tokens, cache)

    def forward(self, src: torch.Tensor | None, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in)
