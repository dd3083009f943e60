"""seq2seq (lecture §01, many-to-many): an encoder RNN reads the source, a decoder RNN writes the target.

* Without attention (Sutskever et al. 2014; Cho et al. 2014) the encoder's last state, the
  *context vector*, is all the decoder learns about the source: it starts the decoder,
  h_0^dec = h_S^enc. The lecture's two complaints follow: the farther a word, the more it is
  forgotten, and the context vector holds the last words best.
* With attention (Bahdanau et al. 2015; Luong et al. 2015) the decoder also reads, at every step,
  c_t = Σ_i softmax_i(score(s_t, h_i)) h_i over all encoder states (:class:`RecurrentAttention`).

In both, the decoder is a next-token predictor, trained with teacher forcing, whose output is
the lecture's  ŷ_t = s_t W_y + c_t W_y' + x_t W_x  (the c_t term only with attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.config import RNNSeq2SeqConfig
from seqlab.models.attention import RecurrentAttention
from seqlab.models.dropout import Dropout
from seqlab.models.interface import DecoderCache, EncoderOutput
from seqlab.models.rnn import State, make_rnn, run_rnn


class RNNDecoder(nn.Module):
    """Embedding → RNN → readout, optionally attending to encoder states; also the RNN language model.

    ``input_readout`` adds the lecture's x_t W_x term to ŷ_t (seq2seq); a language model leaves it
    out, ŷ_t = h_t W_y + b_y. With ``tie_output`` the readout is computed in the embedding space and
    multiplied by the embedding matrix, so W_y maps H → E and the vocabulary projection is Eᵀ.
    """

    def __init__(self, cell: str, vocab_size: int, embed_dim: int, hidden_size: int, n_layers: int, dropout: float,
                 attention: str = "none", memory_size: int | None = None, tie_output: bool = True,
                 input_readout: bool = True, pad_id: int = 0, embedding: nn.Embedding | None = None):
        super().__init__()
        self.embed = embedding if embedding is not None else nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.rnn = make_rnn(cell, embed_dim, hidden_size, n_layers, dropout)
        self.dropout = Dropout(dropout)
        out = embed_dim if tie_output else vocab_size
        self.W_y = nn.Linear(hidden_size, out)  # s_t W_y (+ b)
        self.W_x = nn.Linear(embed_dim, out, bias=False) if input_readout else None  # x_t W_x
        self.attention = None
        if attention != "none":
            memory_size = memory_size or hidden_size
            self.attention = RecurrentAttention(attention, hidden_size, memory_size)
            self.W_c = nn.Linear(memory_size, out, bias=False)  # c_t W_y'
        self.tie_output = tie_output

    def forward(self, tokens: torch.Tensor, state: State | None = None, enc: EncoderOutput | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """tokens (B, T) → logits (B, T, V), the final state, and attention weights (B, T, S) if asked.

        The recurrence runs over the whole prefix at once (teacher forcing): target <pad> comes after
        the last real token, so it cannot reach any real position's state.
        """
        x = self.dropout(self.embed(tokens))  # (B, T, E)
        s, state = run_rnn(self.rnn, x, state=state)  # (B, T, H)
        s = self.dropout(s)
        y = self.W_y(s)  # s_t W_y
        if self.W_x is not None:
            y = y + self.W_x(x)  # + x_t W_x
        weights = None
        if self.attention is not None:
            c, weights = self.attention(s, enc.memory, enc.src_mask)  # (B, T, K), (B, T, S)
            y = y + self.W_c(c)  # + c_t W_y'
        logits = F.linear(y, self.embed.weight) if self.tie_output else y  # (B, T, V)
        return logits, state, weights if need_weights else None

    def step(self, new_tokens: torch.Tensor, cache: DecoderCache | None, enc: EncoderOutput | None = None,
             initial_state: State | None = None) -> tuple[torch.Tensor, DecoderCache]:
        """Incremental decoding: the state carried in the cache (or ``initial_state`` at the start)
        reads the new tokens (N, t); logits (N, V) for the last of them."""
        state = cache.state if cache is not None else initial_state
        logits, state, _ = self(new_tokens, state, enc)
        position = (cache.position if cache is not None else 0) + new_tokens.size(1)
        return logits[:, -1], DecoderCache(position=position, state=state)


class RNNSeq2Seq(nn.Module):
    """Encoder RNN + decoder RNN (+ attention), with the encode/decode contract of the Transformer."""

    def __init__(self, cfg: RNNSeq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        if cfg.share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary for source and target")
        self.cfg, self.pad_id, self.max_positions = cfg, pad_id, cfg.max_positions
        E, H = cfg.embed_dim, cfg.hidden_size
        self.src_embed = None if cfg.share_embeddings else nn.Embedding(src_vocab_size, E, padding_idx=pad_id)
        self.decoder = RNNDecoder(cfg.cell, tgt_vocab_size, E, H, cfg.n_layers, cfg.dropout, cfg.attention,
                                  memory_size=H, tie_output=cfg.tie_output, pad_id=pad_id)
        # A bidirectional encoder gives each direction H/2, so [h→; h←] has the decoder's size H.
        self.encoder = make_rnn(cfg.cell, E, H // 2 if cfg.bidirectional else H, cfg.n_layers, cfg.dropout,
                                cfg.bidirectional)
        self.embed_dropout = Dropout(cfg.dropout)

    def encode(self, src: torch.Tensor) -> EncoderOutput:
        """src (B, S) → encoder states h_1 … h_S (B, S, H) and the context vector, the decoder's h_0."""
        src_mask = src != self.pad_id  # (B, S)
        table = self.src_embed if self.src_embed is not None else self.decoder.embed
        x = self.embed_dropout(table(src))  # (B, S, E)
        memory, state = run_rnn(self.encoder, x, lengths=src_mask.sum(dim=1))  # (B, S, H), each (L·dirs, B, H/dirs)
        if self.cfg.bidirectional:  # (2L, B, H/2) → (L, B, H): join the two directions of each layer
            state = tuple(s.view(self.cfg.n_layers, 2, *s.shape[1:]).permute(0, 2, 1, 3).flatten(2) for s in state)
        return EncoderOutput(memory=memory, src_mask=src_mask, state=state)

    def decode(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        """tgt_in (B, T) = <bos> + target shifted right → next-token logits (B, T, V); h_0 = context vector."""
        return self.decoder(tgt_in, enc.state, enc)[0]

    def alignment(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor | None:
        """Attention weights α_ti (B, T, S): which source word each output step read (None without attention)."""
        return self.decoder(tgt_in, enc.state, enc, need_weights=True)[2]

    def decode_step(self, new_tokens: torch.Tensor, enc: EncoderOutput, cache: DecoderCache | None
                    ) -> tuple[torch.Tensor, DecoderCache]:
        """The decoder RNN carries its state from step to step, starting from the context vector."""
        return self.decoder.step(new_tokens, cache, enc, enc.state)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src))
