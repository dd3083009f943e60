"""The training objective: next-token cross-entropy with label smoothing, ignoring <pad>; or,
for many-to-one models, cross-entropy over classes or squared error on a score."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqlab.data.batching import Batch
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


def batch_loss(model, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """The summed loss of one batch for any model kind; divide by ``batch.n_targets`` for the mean.

    Sequence outputs (teacher forcing): token cross-entropy of ``model(src, tgt_in)`` against
    ``tgt_out``. One output per sequence: cross-entropy over classes, or squared error on a score.
    """
    if batch.labels is None:
        return token_cross_entropy(model(batch.src, batch.tgt_in), batch.tgt_out, label_smoothing)
    out = model(batch.src).float()  # (B, n_classes) or (B,)
    if batch.labels.is_floating_point():
        return F.mse_loss(out, batch.labels, reduction="sum")
    return F.cross_entropy(out, batch.labels, label_smoothing=label_smoothing, reduction="sum")
