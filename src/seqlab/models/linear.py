"""y = x Wᵀ + b, multiplied by the faster of the CPU's two matrix libraries.

PyTorch sends float32 matrix products on the CPU to MKL, which takes its AVX-512 kernels only on
Intel processors: on AMD's AVX-512 cores it runs about half as fast as oneDNN, the other library
inside PyTorch (:func:`seqlab.hardware.fp32_gemm_prefers_onednn`). Where that holds, the
Transformer's linear layers and the fused output loss multiply through oneDNN
(``torch.ops.mkldnn._linear_pointwise``), forward and backward:

    y = x Wᵀ + b          (N, in) → (N, out)
    ∂L/∂x = ∂L/∂y W       (N, out) → (N, in)
    ∂L/∂W = (∂L/∂y)ᵀ x    (out, in), a reduction over the N rows
    ∂L/∂b = Σ_rows ∂L/∂y

Elsewhere (Intel, bf16 under autocast, which already goes to oneDNN, GPUs) these are plain
``F.linear`` and ``@``. Same products, same float32 arithmetic; only the kernels differ
(tests/models/test_linear.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

from seqlab.hardware import fp32_gemm_prefers_onednn


# Below about 4 M multiply-adds a oneDNN call's set-up (~15 µs) outweighs its faster kernels:
# 1 × 128 × 384 takes 4 µs in MKL and 17 µs in oneDNN, 64 × 128 × 384 about 40 µs in both.
MIN_MULTIPLY_ADDS = 1 << 22


def routed(a: torch.Tensor, b: torch.Tensor, multiply_adds: int) -> bool:
    """Whether a product of ``a`` and ``b`` goes to oneDNN: float32 on a CPU that prefers it, large
    enough to pay for the call, no autocast, and not while ``torch.compile`` traces (its own CPU
    lowering picks the kernels)."""
    if torch.compiler.is_compiling() or multiply_adds < MIN_MULTIPLY_ADDS:
        return False
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (a, b))
            and not torch.is_autocast_enabled("cpu") and fp32_gemm_prefers_onednn())


@register_flop_formula(torch.ops.mkldnn._linear_pointwise)
def _linear_pointwise_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    """What ``torch.utils.flop_counter`` counts for oneDNN's linear, as for ``aten.mm``: 2·M·N·K."""
    return 2 * math.prod(out_shape) * x_shape[-1]


def _onednn_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (K, N) by oneDNN: a linear layer with bᵀ as its (N, K) weight."""
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a (M, K) @ b (K, N), no autograd: oneDNN where :func:`routed`, ``torch.mm`` otherwise."""
    if not routed(a, b, a.size(0) * a.size(1) * b.size(1)):
        return torch.mm(a, b, out=out)
    return _onednn_mm(a, b) if out is None else out.copy_(_onednn_mm(a, b))


def _onednn_weight_grad(grad_out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(∂L/∂y)ᵀ x by oneDNN in its faster layout: (out, in), or its transpose (in, out) and True.

    oneDNN reduces over the long N axis about twice as fast when the wider of the two output
    sides lies along the rows it writes (2 Zen 5 cores, N = 4,096, out 2,048, in 512: 226 vs
    401 GFLOP/s), so a tall result is computed as xᵀ ∂L/∂y.
    """
    if grad_out.size(1) > x.size(1):
        return _onednn_mm(x.t(), grad_out), True  # (in, out)
    return _onednn_mm(grad_out.t(), x), False  # (out, in)


def weight_grad(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∂L/∂W = (∂L/∂y)ᵀ x: (out, in) from grad_out (N, out) and x (N, in), no autograd."""
    if not routed(grad_out, x, grad_out.numel() * x.size(1)):
        return grad_out.t() @ x
    product, transposed = _onednn_weight_grad(grad_out, x)
    return product.t().contiguous() if transposed else product


class WeightGradSum:
    """∂L/∂W = Σ_chunks (∂L/∂y)ᵀ x, summed in float32 over row chunks whose products run in
    ``dtype`` (float32, or bfloat16 under autocast).

    A bfloat16 product goes through two buffers made once: adding a bf16 tensor to a float32
    one makes a float32 copy of it at every call, and a fresh 16 MB tensor (8,000 × 512) is
    page-faulted in each time (23 ms a chunk on two Zen 5 cores, 12% of a small bf16 step).
    """

    def __init__(self, out_features: int, in_features: int, dtype: torch.dtype, device: torch.device):
        self._sum = torch.zeros(out_features, in_features, dtype=torch.float32, device=device)
        self._sum_t = None  # (in, out): oneDNN's tall products, summed as they come and transposed once
        self._product = self._staged = None
        if dtype != torch.float32:
            self._product = torch.empty(out_features, in_features, dtype=dtype, device=device)
            self._staged = torch.empty_like(self._sum)

    def add(self, grad_out: torch.Tensor, x: torch.Tensor) -> None:
        """total += (∂L/∂y)ᵀ x for grad_out (n, out) and x (n, in)."""
        if self._product is not None:
            torch.mm(grad_out.t(), x, out=self._product)
            self._sum.add_(self._staged.copy_(self._product))
        elif not routed(grad_out, x, grad_out.numel() * x.size(1)):
            self._sum.addmm_(grad_out.t(), x)  # MKL accumulates in place
        else:
            product, transposed = _onednn_weight_grad(grad_out, x)
            if not transposed:
                self._sum.add_(product)
            elif self._sum_t is None:
                # Tall (the output layer, 8,000 × 512): summed as it comes, where transposing each
                # chunk's product made a fresh 16 MB copy. Loss forward and backward, 4,096 × 512 →
                # 8,000, two Zen 4 cores: 605 → 563 ms; a small fp32 training step 1-2% faster.
                self._sum_t = product
            else:
                self._sum_t.add_(product)

    @property
    def total(self) -> torch.Tensor:
        """Σ_chunks (∂L/∂y)ᵀ x so far, (out, in)."""
        if self._sum_t is not None:
            self._sum.add_(self._sum_t.t())
            self._sum_t = None
        return self._sum


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with all three products by oneDNN (float32, CPU)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # (…, out)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.size(-1))  # (N, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(g, weight).view(x.shape)  # ∂L/∂x = ∂L/∂y W
        if ctx.needs_input_grad[1]:
            grad_weight = weight_grad(g, x.reshape(-1, x.size(-1)))  # ∂L/∂W = (∂L/∂y)ᵀ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = g.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias): x (…, in), weight (out, in) → (…, out), by the faster library."""
    if routed(x, weight, x.numel() * weight.size(0)):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose product is :func:`linear`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def torch_linear_holding(weight: nn.Parameter, bias: nn.Parameter | None = None) -> nn.Linear:
    """A plain ``nn.Linear`` whose parameters are ``weight`` (out, in) and ``bias`` themselves, not copies."""
    layer = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None, device="meta")
    layer.weight, layer.bias = weight, bias
    return layer


def as_torch_linears(model: nn.Module) -> nn.Module:
    """Replace, in place, every :class:`Linear` by a plain ``nn.Linear`` holding the same
    parameters (for tools that match the exact class, such as dynamic int8 quantization)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is Linear:
                setattr(module, name, torch_linear_holding(child.weight, child.bias))
    return model
