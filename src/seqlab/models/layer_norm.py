"""Layer normalization (Ba et al. 2016) that keeps a bfloat16 residual stream in bfloat16.

LayerNorm(x) = γ ⊙ (x − μ) / √(σ² + ε) + β, with μ and σ² the mean and variance over the
features of each position.

Under autocast PyTorch runs ``layer_norm`` in float32 and returns float32, so the residual
stream between layers (embeddings, x + Dropout(Sublayer(x)), the norms) is float32, and every
matrix product casts its input back to bfloat16: a copy per layer input, forward and backward,
and float32 element-wise work (dropout, residual adds) at twice the memory traffic. Under
bfloat16 autocast :class:`LayerNorm` keeps its input's dtype instead, as Megatron-LM does by
default (``fp32_residual_connection`` off): the mean and variance are still accumulated in
float32 inside the kernel, γ and β stay float32 master weights with float32 gradients, but the
output is bfloat16. Small benchmark model, bf16 training step, two Zen 5 cores, alternated with
the float32 stream in one process: 1,794 → 1,885 tok/s (fastest of 6; benchmarks/RESULTS.md). float16 (CUDA, with a gradient scaler) keeps autocast's float32
residual: its narrower range would not hold a deep pre-LN stream.

:func:`to_compute_dtype` is the other half: it moves the embeddings into bfloat16 where the
stream starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bf16_autocast_on(x: torch.Tensor) -> bool:
    """Whether bfloat16 autocast is on for x's device."""
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16


def to_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in bfloat16 under bfloat16 autocast (where a residual stream starts), else unchanged."""
    return x.to(torch.bfloat16) if bf16_autocast_on(x) else x


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose output stays bfloat16 under bfloat16 autocast (float32 statistics,
    float32 γ and β); elsewhere exactly ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bf16_autocast_on(x):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):  # autocast would run it in float32
            return F.layer_norm(x.to(torch.bfloat16), self.normalized_shape, self.weight, self.bias, self.eps)  # (…, C)
