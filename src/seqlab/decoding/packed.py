"""Weights laid out once for the CPU's matrix units, for bfloat16 (and, on AMD, float32) decoding.

A decoding step multiplies a few dozen rows (one per sentence or beam) by every weight matrix
of the decoder. On a CPU with AMX, oneDNN first reorders each bf16 weight into the tiled layout
its kernels read, and ``F.linear`` pays that reorder at every call: for 64 rows it is half the
time of the product itself. CTranslate2 packs its weights once at load time; so does PyTorch's
own ``torch.compile`` when it freezes a model (``mkldnn._reorder_linear_weight`` and
``mkldnn._linear_pointwise``). :class:`PackedLinear` does the same in eager mode:

    M = 64 rows, bf16, 2 threads (benchmarks/RESULTS.md): F.linear vs packed
        512 → 1536   134 µs → 78 µs        2048 → 512   194 µs → 86 µs
        512 → 8000   666 µs → 380 µs (the output layer)

Where float32 products go to oneDNN too (AMD CPUs with AVX-512, where MKL runs its AVX2
kernels: :mod:`seqlab.models.linear`), float32 weights are packed the same way:

    M = 64 rows, fp32, 2 Zen 5 cores: F.linear (MKL) vs packed
        512 → 1536   573 µs → 214 µs       2048 → 512   710 µs → 278 µs
        512 → 8000   3,345 µs → 1,291 µs

Packed weights serve inference only: no gradients flow through them.
"""

from __future__ import annotations

import torch
from torch import nn

from seqlab.hardware import fp32_gemm_prefers_onednn, has_fast_bf16

ROWS_HINT = 64  # the reorder is tuned for this many rows; any number works
# A packed float32 product loses to MKL's for small weights and few rows (oneDNN's call costs
# ~10 µs more: 1 × 128 × 384, 4 µs MKL, 14 µs packed); at 8 rows × 256 × 768 it wins, 22 vs 35 µs.
FP32_MIN_PACKED = 256 * 256


def can_pack(model: nn.Module) -> bool:
    """Packing pays for bf16 weights on a CPU with bf16 matrix units and a oneDNN build of torch,
    and for float32 weights where oneDNN beats MKL."""
    weight = next(model.parameters(), None)
    if weight is None or weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if weight.dtype == torch.float32:
        return fp32_gemm_prefers_onednn()
    return (weight.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and has_fast_bf16(weight.device))


class PackedLinear(nn.Module):
    """y = x Wᵀ + b with W reordered once into oneDNN's blocked layout (the first time it is used,
    so layers a model never calls cost no memory)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        self.dense: torch.Tensor | None = weight.detach()  # (out, in) until packed
        self.packed: torch.Tensor | None = None
        self.bias = None if bias is None else bias.detach()

    @classmethod
    def of(cls, linear: nn.Linear) -> PackedLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.dense, ROWS_HINT)
            self.dense = None  # the blocked copy replaces it
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")  # (…, out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed={self.packed is not None}"


def give_tied_output_a_layer(model: nn.Module, make_layer) -> nn.Module:
    """A tied output layer (ŷ = h Eᵀ with the embedding matrix E: the Transformer's
    ``output_proj`` and GPT's ``head`` are None) gets a layer of its own, ``make_layer(E)``, so
    that packing or quantization, which work on layers, reach the largest product of a step
    (a ``make_layer`` that returns None leaves it tied)."""
    for layer, embedding in (("output_proj", "tgt_embed"), ("head", "tok_embed")):
        if hasattr(model, layer) and getattr(model, layer) is None and hasattr(model, embedding):
            setattr(model, layer, make_layer(getattr(model, embedding).weight))
    return model


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` of a model by a :class:`PackedLinear`, and give a
    tied output layer a packed copy of the embedding matrix."""
    def worth_packing(weight: torch.Tensor) -> bool:
        return weight.dtype != torch.float32 or weight.numel() >= FP32_MIN_PACKED

    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear) and worth_packing(child.weight):
                setattr(module, name, PackedLinear.of(child))
    # a small tied output layer stays tied (None)
    return give_tied_output_a_layer(model, lambda weight: PackedLinear(weight, None) if worth_packing(weight) else None)
