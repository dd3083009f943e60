"""The training objective: next-token cross-entropy, with label smoothing, ignoring <pad>."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqlab.data.tokenizer import PAD


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Σ_t −log p(y_t | y_<t, x) over the real tokens of a batch (a sum, not a mean).

    logits: (B, T, V); target: (B, T) with <pad> where there is no token. With label smoothing ε
    (Szegedy et al. 2016; the paper uses 0.1) the target distribution puts 1 − ε on the reference
    token and spreads ε uniformly over the vocabulary.
    """
    return F.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD,
        label_smoothing=label_smoothing, reduction="sum",
    )
