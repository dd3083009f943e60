"""One-to-many (lecture §01, "image captioning"): one input vector, a whole sequence out.

The vector v (image features, or here the bits of a number) conditions an RNN decoder in one of
two ways (``model.condition``):

* ``init_state``: it becomes the decoder's first state, h_0 = tanh(v W_v + b_v), as the context
  vector does in seq2seq (Vinyals et al. 2015 feed it once, at the start);
* ``prefix``: it is the decoder's first input, x_0 = v W_v, read before <bos>.

The decoder is seq2seq's next-token predictor, so training, search and evaluation are shared.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.config import VectorToSeqConfig
from seqlab.models.interface import DecoderCache, EncoderOutput
from seqlab.models.rnn import run_rnn
from seqlab.models.seq2seq import RNNDecoder


class VectorToSeq(nn.Module):
    """Input vector (B, D) → target sequence, with the encode/decode contract."""

    def __init__(self, cfg: VectorToSeqConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg, self.pad_id, self.max_positions = cfg, pad_id, cfg.max_positions
        self.decoder = RNNDecoder(cfg.cell, tgt_vocab_size, cfg.embed_dim, cfg.hidden_size, cfg.n_layers,
                                  cfg.dropout, tie_output=cfg.tie_output, pad_id=pad_id)
        out = cfg.hidden_size * cfg.n_layers if cfg.condition == "init_state" else cfg.embed_dim
        self.W_v = nn.Linear(cfg.input_dim, out)

    def encode(self, vector: torch.Tensor) -> EncoderOutput:
        """vector (B, D) → the decoder's starting state; memory is the projected vector, one "position"."""
        B, L, H = vector.size(0), self.cfg.n_layers, self.cfg.hidden_size
        projected = self.W_v(vector)  # (B, L·H) or (B, E)
        if self.cfg.condition == "init_state":
            h0 = torch.tanh(projected).view(B, L, H).transpose(0, 1).contiguous()  # (L, B, H)
            state = (h0, torch.zeros_like(h0)) if self.cfg.cell == "lstm" else (h0,)
        else:
            _, state = run_rnn(self.decoder.rnn, projected[:, None])  # read x_0 = v W_v: state after it
        memory = projected[:, None]  # (B, 1, ·): one source position, so lengths and beams work as for text
        return EncoderOutput(memory=memory, src_mask=torch.ones(B, 1, dtype=torch.bool, device=vector.device),
                             state=state)

    def decode(self, tgt_in: torch.Tensor, enc: EncoderOutput) -> torch.Tensor:
        return self.decoder(tgt_in, enc.state)[0]  # (B, T, V)

    def decode_step(self, new_tokens: torch.Tensor, enc: EncoderOutput, cache: DecoderCache | None
                    ) -> tuple[torch.Tensor, DecoderCache]:
        """The decoder RNN carries its state from step to step, starting from the vector's."""
        return self.decoder.step(new_tokens, cache, enc, enc.state)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src))
