"""The contract between an encoder-decoder model and the search/evaluation code.

Every encoder-decoder model in seqlab offers three separate methods, so one training loop, one
search module and one evaluation path serve them all:

* ``encode(src) -> EncoderOutput``: read the padded source batch (B, S) once;
* ``decode(tgt_in, enc) -> logits``: next-token logits (B, T, V) for a target prefix (B, T);
* ``forward(src, tgt_in) = decode(tgt_in, encode(src))``, used for teacher-forced training.

Decoder-only language models keep the same contract with nothing to encode: ``encode`` returns
``None`` and ``decode(tokens, None)`` predicts the next token from the prefix alone. Every model
also has ``max_positions``, the longest sequence it reads or writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """What the decoder needs from the source sentence."""

    memory: torch.Tensor  # (B, S, C) encoder states h_1 … h_S
    src_mask: torch.Tensor  # (B, S) bool, True at real (non-<pad>) source positions
    state: tuple[torch.Tensor, ...] | None = None  # RNN decoders' initial state, each (L, B, H): the context vector

    def index_select(self, index: torch.Tensor) -> "EncoderOutput":
        """Rows ``index`` of the batch: repeats each sentence for its beams in beam search."""
        state = None if self.state is None else tuple(s.index_select(1, index) for s in self.state)
        return EncoderOutput(self.memory.index_select(0, index), self.src_mask.index_select(0, index), state)
