"""The contract between an encoder-decoder model and the search/evaluation code.

Every encoder-decoder model in seqlab offers three separate methods, so one training loop, one
search module and one evaluation path serve them all:

* ``encode(src) -> EncoderOutput``: read the padded source batch (B, S) once;
* ``decode(tgt_in, enc) -> logits``: next-token logits (B, T, V) for a target prefix (B, T);
* ``forward(src, tgt_in) = decode(tgt_in, encode(src))``, used for teacher-forced training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """What the decoder needs from the source sentence."""

    memory: torch.Tensor  # (B, S, C) encoder states h_1 … h_S
    src_mask: torch.Tensor  # (B, S) bool, True at real (non-<pad>) source positions

    def index_select(self, index: torch.Tensor) -> "EncoderOutput":
        """Rows ``index`` of the batch: repeats each sentence for its beams in beam search."""
        return EncoderOutput(self.memory.index_select(0, index), self.src_mask.index_select(0, index))
