"""Dropout (Srivastava et al. 2014) with a cheaper random mask on CPU.

Dropout(x)_i = x_i · m_i / (1 − p), m_i ~ Bernoulli(1 − p): in training each unit is zeroed with
probability p and the survivors are scaled so that the expected output equals x (eval: identity).

Why not ``nn.Dropout``: on CPU, PyTorch draws one Bernoulli sample per element through a
generic per-element sampler (about 160 M elements/s on two cores), which made dropout about a
fifth of a Transformer training step, more than all of attention. Here the mask comes from raw
random bits instead: one 64-bit draw of the default generator gives four 16-bit integers, and
unit i is kept when its integer lands in the top 1 − p of the 16-bit range (masks 5× faster,
forward + backward 2.8× faster; benchmarks/RESULTS.md). p is thereby rounded to a multiple of 1/65536 (0.1 becomes 0.100006).
The default generator is the source, so ``torch.manual_seed`` and saved RNG states reproduce
masks exactly. CUDA keeps PyTorch's fused kernel, which is already fast there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # 16-bit integers per mask element


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Mask of ``shape``, each entry 1 (True) with probability 1 − p (to 1/65536), else 0.

    ``dtype``: the comparison writes its 0/1 straight into a tensor of this type (converting a
    bool mask afterwards takes several times longer than the comparison itself).
    """
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)  # 64 uniform bits each
    threshold = round(p * _LEVELS) - _LEVELS // 2  # int16 values ≥ this make up 1 − p of the range
    return torch.ge(bits.view(torch.int16)[:n].view(shape), threshold, out=torch.empty(shape, dtype=dtype))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 − p) (identity unless training)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    # x · m/(1 − p) with the scaled mask made in x's own dtype: then forward and backward are one
    # plain product each (``where`` or a product with the bool mask run 2-3× slower), and autograd
    # keeps only the mask.
    scaled_mask = keep_mask(x.shape, p, x.dtype).mul_(1.0 / (1.0 - p))
    return x * scaled_mask


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` using :func:`dropout`."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
