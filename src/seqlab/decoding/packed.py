"""Weights laid out once for the CPU's matrix units, for bfloat16 (and, on AMD, float32) decoding,
and int8 weights for oneDNN's int8 kernels.

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

Int8 (:class:`Int8Linear`) goes one step further, as CTranslate2's ``int8_bfloat16`` compute type
does: weights quantized once to int8 and laid out for oneDNN's u8·s8 kernels (VNNI or AMX dot
products, int32 accumulation), activations quantized at each call, and everything between the
products (attention, LayerNorm, the caches) left in bfloat16 where the CPU multiplies bf16 fast.
Measured against the bf16 packed product on two Zen 5 cores (AVX512-VNNI), alternated in one process:

    rows × in → out        bf16 packed   int8 (quantizing x included)
    320 × 512 → 2048          759 µs        483 µs
    320 × 2048 → 512          750 µs        518 µs
    320 × 512 → 8000        3,083 µs      1,708 µs
     64 × 512 → 512            53 µs         61 µs   (quantizing costs more than it saves)

Packed weights serve inference only: no gradients flow through them. Under ``torch.compile``
(:mod:`seqlab.decoding.compiled`) each product is one opaque call, an operator of seqlab's own
that inductor leaves as it is (it lowers prepacked products only for weights frozen into the
graph), and an int8 layer's activations are quantized inside the graph, in the loop that makes them.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from seqlab.hardware import cpu_flags, fp32_gemm_prefers_onednn, has_bf16_units

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
            and has_bf16_units(weight.device))


def packed_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    """x Wᵀ + b with W prepacked by ``mkldnn._reorder_linear_weight``: (…, in) → (…, out)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


# The products as operators of their own, for torch.compile: opaque calls that inductor leaves alone.
# Defined on a torch.library.Library rather than with torch.library.custom_op, whose wrapper costs
# ~11 µs a call against ~4.5 µs here (a step of the tiny model makes 19 products). Eager calls take
# the plain functions and skip the dispatch altogether.
_LIBRARY = torch.library.Library("seqlab", "DEF")


def opaque_operator(name: str, signature: str, function, output_like):
    """``torch.ops.seqlab.<name>``: ``function`` behind an operator of the given schema, for every
    backend (packed weights are oneDNN tensors), and ``output_like`` for its output's shape under tracing."""
    _LIBRARY.define(f"{name}{signature}")
    _LIBRARY.impl(name, function, "CompositeExplicitAutograd")
    torch.library.register_fake(f"seqlab::{name}", output_like, lib=_LIBRARY)
    return getattr(torch.ops.seqlab, name).default


packed_product_op = opaque_operator(
    "packed_linear", "(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor", packed_product,
    lambda x, packed, bias, out_features: x.new_empty(*x.shape[:-1], out_features))


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
        product = packed_product_op if torch.compiler.is_compiling() else packed_product
        return product(x, self.packed, self.bias, self.out_features)  # (…, out)

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


def replace_linears(model: nn.Module, make_layer) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` of a model by ``make_layer(weight, bias)`` (None keeps
    it), and give a tied output layer ``make_layer(E, None)`` of the embedding matrix E."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear) and (layer := make_layer(child.weight, child.bias)) is not None:
                setattr(module, name, layer)
    return give_tied_output_a_layer(model, lambda weight: make_layer(weight, None))


def pack_linears(model: nn.Module) -> nn.Module:
    """Every ``nn.Linear`` of a model, in place, a :class:`PackedLinear`, and a tied output layer a
    packed copy of the embedding matrix (small float32 ones stay as they are, a tied one tied)."""
    def packed(weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear | None:
        worth_packing = weight.dtype != torch.float32 or weight.numel() >= FP32_MIN_PACKED
        return PackedLinear(weight, bias) if worth_packing else None

    return replace_linears(model, packed)


def can_quantize(model: nn.Module) -> bool:
    """Whether :class:`Int8Linear` runs here: a CPU model, a oneDNN build of torch with its int8
    linear kernels, and a CPU with int8 dot-product instructions (VNNI: AVX512-VNNI, AVX-VNNI, AMX)."""
    weight = next(model.parameters(), None)
    return (weight is not None and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qlinear_pointwise")
            and bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()))


class Int8Linear(nn.Module):
    """y ≈ x Wᵀ + b with int8 weights and activations, for inference.

    W ≈ s_w ⊙ W_q with one scale per output row and W_q in [−127, 127] (symmetric), quantized and
    laid out for oneDNN once, the first time the layer is used. x ≈ s_x (x_q − z) with x_q uint8,
    one scale and zero point per call for the whole tensor, its range stretched to hold 0 (so
    zeros, from ReLU or padding, stay exact), as torch's dynamic quantization does: a row's result
    depends slightly on the other rows of its batch. Products accumulate in int32; y comes back,
    with b added, in the dtype of the weight it was made from, the dtype the rest of the model
    computes in (bfloat16 or float32), whatever the input's (a model's first layer may read float32 data).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        self.dense: torch.Tensor | None = weight.detach()  # (out, in) until quantized
        self.packed: torch.Tensor | None = None
        self.weight_scale = self.weight_zero_point = None
        self.out_dtype = weight.dtype
        self.bias = None if bias is None else bias.detach().float()

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def _quantize_weight(self) -> None:
        w = self.dense.float()  # (out, in)
        self.weight_scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)  # s_w: (out,)
        w_q = torch.round(w / self.weight_scale[:, None]).to(torch.int8)  # W_q
        self.weight_zero_point = torch.zeros(self.out_features, dtype=torch.long)
        self.packed = torch.ops.onednn.qlinear_prepack(w_q, [ROWS_HINT, self.in_features])
        self.dense = None  # the int8 copy replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            self._quantize_weight()
        if torch.compiler.is_compiling():  # x quantized inside the graph, fused with the loop that made it
            x_q, scale, zero_point = quantized_in_graph(x)
            return int8_quantized_product_op(x_q, scale, zero_point, self.packed, self.weight_scale,
                                             self.weight_zero_point, self.bias, self.out_features, self.out_dtype)
        return int8_product(x, self.packed, self.weight_scale, self.weight_zero_point, self.bias, self.out_features,
                            self.out_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_product(x: torch.Tensor, packed: torch.Tensor, weight_scale: torch.Tensor, weight_zero_point: torch.Tensor,
                 bias: torch.Tensor | None, out_features: int, out_dtype: torch.dtype) -> torch.Tensor:
    """x Wᵀ + b of :class:`Int8Linear`: x quantized to uint8 with one scale and zero point for the
    whole tensor, its range stretched to hold 0, then oneDNN's u8·s8 product. (…, in) → (…, out)."""
    if x.numel() == 0:
        return x.new_zeros(*x.shape[:-1], out_features, dtype=out_dtype)
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if not math.isfinite(high - low):
        raise ValueError(f"an int8 layer ({x.size(-1)} → {out_features}) got non-finite activations "
                         f"(from {low} to {high}): decode this model in fp32 or bf16 to see where they come from")
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255  # s_x
    zero_point = round(-low / scale)  # z
    x_q = _quantized_uint8(x, scale, zero_point)  # (…, in)
    return torch.ops.onednn.qlinear_pointwise(x_q, scale, zero_point, packed, weight_scale, weight_zero_point, bias,
                                              1.0, 0, out_dtype, "none", [], "")  # (…, out)


def quantized_in_graph(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ≈ s_x (x_q − z) as :func:`int8_product` quantizes it, in tensor ops that ``torch.compile``
    fuses with the loop that made x (a LayerNorm, a ReLU), and with s_x and z left as 0-d tensors:
    no host sync, no eager calls. Compiled int8 greedy steps ran 9–13% faster this way than with
    the eager ``aminmax`` + ``quantize_per_tensor`` of :func:`int8_product` (benchmarks/RESULTS.md,
    tenth session). Non-finite activations are not caught here (that takes a sync), only in the
    eager calls (the encoder, a search's first steps). A batch must have rows (``aminmax`` of
    nothing fails)."""
    x = x.float()
    low, high = torch.aminmax(x)
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)  # the range stretched to hold 0
    scale = (high - low).clamp(min=1e-12) / 255  # s_x
    zero_point = torch.round(-low / scale)  # z
    x_q = (torch.round(x * (1 / scale)) + zero_point).clamp(0, 255).to(torch.uint8)  # (…, in), as torch rounds it
    return x_q, scale, zero_point.to(torch.long)


def int8_quantized_product(x_q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, packed: torch.Tensor,
                           weight_scale: torch.Tensor, weight_zero_point: torch.Tensor, bias: torch.Tensor | None,
                           out_features: int, out_dtype: torch.dtype) -> torch.Tensor:
    """oneDNN's u8·s8 product of an activation quantized by :func:`quantized_in_graph`. (…, in) → (…, out)."""
    return torch.ops.onednn.qlinear_pointwise.tensor(x_q, scale, zero_point, packed, weight_scale, weight_zero_point,
                                                     bias, 1.0, 0, out_dtype, "none", [], "")  # (…, out)


# An opaque call for torch.compile: inductor lowers oneDNN's int8 product only for weights frozen into
# the graph as constants. Eager calls take int8_product.
int8_quantized_product_op = opaque_operator(
    "int8_linear", "(Tensor x_q, Tensor scale, Tensor zero_point, Tensor packed, Tensor weight_scale, "
    "Tensor weight_zero_point, Tensor? bias, int out_features, ScalarType out_dtype) -> Tensor", int8_quantized_product,
    lambda x_q, scale, zero_point, packed, weight_scale, weight_zero_point, bias, out_features, out_dtype:
    x_q.new_empty(*x_q.shape[:-1], out_features, dtype=out_dtype))


def _quantized_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """round(x / scale) + zero_point, clamped to [0, 255], as a plain uint8 tensor.

    ``torch.quantize_per_tensor`` does it in one vectorized pass; the same arithmetic in tensor
    ops, with its float32 temporaries, made whole int8 products 5–33% slower on two Zen 5 cores
    (4.8× at 2,112 × 2,048 → 512, where the temporaries are fresh 17 MB tensors). Its quint8
    result is read through a uint8 view of its storage: ``int_repr()`` would copy it once more
    (54 µs for 320 × 512).
    """
    with warnings.catch_warnings():  # quantized tensors are announced as deprecated (warned once)
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_tensor(x.float(), scale, zero_point, torch.quint8)
    return torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), 0, q.shape, q.stride())


def quantize_linears(model: nn.Module) -> nn.Module:
    """Every ``nn.Linear`` of a model, in place, an :class:`Int8Linear`, and a tied output layer an
    int8 copy of the embedding matrix (the largest product of a step)."""
    return replace_linears(model, Int8Linear)
