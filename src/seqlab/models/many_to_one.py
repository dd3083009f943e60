"""Many-to-one (lecture §01, "the score of a sentence, a sentiment score"): one output per sequence.

An encoder reads the whole sequence and a pooled summary of it goes through one linear layer:
class logits (cross-entropy) or one number (MSE). The encoder is an RNN, whose last state h_T
is the summary (the same "context vector" as seq2seq's), or a Transformer encoder, whose states
are averaged or whose last real position is taken.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seqlab.config import ClassifierConfig, TransformerConfig
from seqlab.models.dropout import Dropout
from seqlab.models.rnn import make_rnn, run_rnn
from seqlab.models.transformer import EncoderLayer, SinusoidalPositionalEncoding


class SequenceClassifier(nn.Module):
    """Sequence → class logits (B, n_classes), or → a score (B,) when ``objective: regress``."""

    def __init__(self, cfg: ClassifierConfig, src_vocab_size: int, n_outputs: int, pad_id: int = 0):
        super().__init__()
        self.cfg, self.pad_id, self.max_positions = cfg, pad_id, cfg.max_positions
        E = cfg.embed_dim
        self.embed = nn.Embedding(src_vocab_size, E, padding_idx=pad_id)
        self.dropout = Dropout(cfg.dropout)
        if cfg.encoder == "transformer":
            layer_cfg = TransformerConfig(d_model=E, n_heads=cfg.n_heads, n_encoder_layers=cfg.n_layers, d_ff=cfg.d_ff,
                                          dropout=cfg.dropout, layer_norm="pre", max_positions=cfg.max_positions)
            self.positions = SinusoidalPositionalEncoding(E, cfg.max_positions)
            self.layers = nn.ModuleList(EncoderLayer(layer_cfg) for _ in range(cfg.n_layers))
            self.norm = nn.LayerNorm(E)
            width = E
        else:
            self.rnn = make_rnn(cfg.encoder, E, cfg.hidden_size, cfg.n_layers, cfg.dropout)
            width = cfg.hidden_size
        self.head = nn.Linear(width, 1 if cfg.objective == "regress" else n_outputs)

    def encode_states(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) → per-position states (B, S, W) and the pooled summary (B, W)."""
        mask = src != self.pad_id  # (B, S)
        lengths = mask.sum(dim=1)
        if self.cfg.encoder == "transformer":
            x = self.dropout(self.embed(src) * math.sqrt(self.cfg.embed_dim) + self.positions(src.size(1)))
            for layer in self.layers:
                x = layer(x, mask[:, None, None, :])
            states = self.norm(x)  # (B, S, E)
            last = states[torch.arange(src.size(0)), lengths - 1]  # the last real position
        else:
            states, final = run_rnn(self.rnn, self.dropout(self.embed(src)), lengths)  # (B, S, H)
            last = final[0][-1]  # h_T of the top layer, taken after each sequence's own last token
        if self.cfg.pooling == "mean":
            pooled = (states * mask[..., None]).sum(dim=1) / lengths[:, None]
        else:
            pooled = last
        return states, pooled  # (B, S, W), (B, W)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        out = self.head(self.dropout(self.encode_states(src)[1]))  # (B, n_classes) or (B, 1)
        return out.squeeze(-1) if self.cfg.objective == "regress" else out
