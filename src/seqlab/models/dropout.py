"""Dropout (Srivastava et al. 2014) with a cheaper random mask on CPU.

Dropout(x)_i = x_i · m_i / (1 − p), m_i ~ Bernoulli(1 − p): in training each unit is zeroed with
probability p and the survivors are scaled so that the expected output equals x (eval: identity).

Why not ``nn.Dropout``: on CPU, PyTorch draws one Bernoulli sample per element through a
generic per-element sampler (about 160 M elements/s on two cores), which made dropout about a
fifth of a Transformer training step, more than all of attention. Here the mask comes from raw
random bits instead: one 64-bit draw of the default generator gives four 16-bit integers, and
unit i is kept when its integer lands in the top 1 − p of the 16-bit range (forward + backward
of 4 M bf16 elements on two cores: 24.0 ms with ``F.dropout``, 6.6 ms here; benchmarks/RESULTS.md).
p is thereby rounded to a multiple of 1/65536 (0.1 becomes 0.100006).

The default generator is the source, so ``torch.manual_seed`` and saved RNG states reproduce
masks exactly. PyTorch's CPU generator is one sequential Mersenne Twister, so drawing the bits
uses one core however many there are; a long mask is drawn in slices, one per thread, each from
a generator seeded by the default one (still reproducible; 1.9× faster on two cores). CUDA
keeps PyTorch's fused kernel, which is already fast there, and so does a ``torch.compile``d graph
(``train.compile``): inductor draws its own random numbers inside the fused elementwise kernels,
and the bit tricks here (an int64 buffer read as int16) are views it cannot replay.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # 16-bit integers per mask element
_WORDS_PER_SLICE = 1 << 18  # below ~1 M mask elements a thread's start-up costs more than it saves


@lru_cache(maxsize=4)
def _threads(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="seqlab-dropout")


def random_words(count: int) -> torch.Tensor:
    """``count`` uniformly random 64-bit integers from the default generator, drawn on up to
    ``torch.get_num_threads()`` threads: each slice from its own generator, seeded from the default
    one, so the result depends only on the default generator's state."""
    words = torch.empty(count, dtype=torch.int64)
    slices = min(torch.get_num_threads(), count // _WORDS_PER_SLICE)
    if slices <= 1:
        return words.random_(-(2**63), 2**63 - 1)
    seeds = torch.randint(0, 2**62, (slices,)).tolist()
    parts = words.chunk(slices)

    def draw(i: int) -> None:
        parts[i].random_(-(2**63), 2**63 - 1, generator=torch.Generator().manual_seed(seeds[i]))

    done = [_threads(slices - 1).submit(draw, i) for i in range(1, slices)]
    draw(0)  # this thread draws the first slice meanwhile
    for future in done:
        future.result()
    return words


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.bool, value: float = 1.0) -> torch.Tensor:
    """Mask of ``shape``: each entry ``value`` (True) with probability 1 − p (to 1/65536), else 0.

    ``dtype``: the comparison writes straight into a tensor of this type (converting a bool mask
    afterwards takes several times longer than the comparison itself). For 16-bit floats it
    writes int16 0/1 and multiplies by the bit pattern of ``value``, which read as that float
    type is 0.0 or ``value``: integer kernels all the way, 4-6× faster than comparing into a
    bfloat16 output.
    """
    n = shape.numel()
    lanes = random_words((n + 3) // 4).view(torch.int16)[:n].view(shape)  # 16 uniform bits each
    threshold = round(p * _LEVELS) - _LEVELS // 2  # int16 values ≥ this make up 1 − p of the range
    if dtype.is_floating_point and dtype.itemsize == 2:
        pattern = torch.tensor(value, dtype=dtype).view(torch.int16).item()
        return torch.ge(lanes, threshold, out=torch.empty(shape, dtype=torch.int16)).mul_(pattern).view(dtype)
    mask = torch.ge(lanes, threshold, out=torch.empty(shape, dtype=dtype))
    return mask if value == 1.0 else mask.mul_(value)


def scaled_keep_mask(x: torch.Tensor, p: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """m / (1 − p) for x's shape, in ``dtype`` (x's own by default): 0 or 1 / (1 − p) per unit."""
    return keep_mask(x.shape, p, dtype or x.dtype, value=1.0 / (1.0 - p))


def _own_mask(x: torch.Tensor) -> bool:
    """Whether dropout of x draws its mask here: on CPU, in eager mode (see the module docstring)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 − p) (identity unless training)."""
    if not training or p == 0.0:
        return x
    if not _own_mask(x):
        return F.dropout(x, p, training=True)
    # x · m/(1 − p) with the scaled mask made in x's own dtype: then forward and backward are one
    # plain product each (``where`` or a product with the bool mask run 2-3× slower), and autograd
    # keeps only the mask.
    return x * scaled_keep_mask(x, p)


def residual_dropout(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """residual + Dropout(x), the sub-layer connection, as one ``addcmul`` on CPU.

    One pass and one new tensor instead of two (the dropped-out x, then the sum): every
    multi-MB tensor made in a step is paged in afresh, so the tensors a step makes cost as much
    as the arithmetic on them.
    """
    if not training or p == 0.0 or not _own_mask(x):
        return residual + dropout(x, p, training)
    dtype = torch.promote_types(residual.dtype, x.dtype)
    return torch.addcmul(residual.to(dtype), x.to(dtype), scaled_keep_mask(x, p, dtype))


class _ReLUDropout(torch.autograd.Function):
    """Dropout(max(0, x)): the mask multiplies the ReLU's output in place, and the backward pass
    needs only that output: ∂/∂x = m / (1 − p) where the output is positive, else 0. So neither
    the mask nor a second activation-sized tensor is kept for backward (the next layer keeps
    the output as its input anyway)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        out = x.clamp_min(0).mul_(scaled_keep_mask(x, p))
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).mul_(ctx.scale), None


def relu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout(ReLU(x)), the inside of the Transformer's FFN, fused on CPU (:class:`_ReLUDropout`)."""
    if not training or p == 0.0 or not _own_mask(x):
        return dropout(torch.relu(x), p, training)
    return _ReLUDropout.apply(x, p)


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
