"""Weights packed once for the CPU's matrix units decode like the model itself (bf16 exactly; fp32 where
oneDNN beats MKL, to float32 rounding); int8 layers compute the quantized product they promise."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import seqlab.decoding.packed as packed_module
from seqlab.config import MODEL_CONFIGS
from seqlab.decoding.packed import (Int8Linear, PackedLinear, can_pack, can_quantize, int8_quantized_product_op,
                                   pack_linears, quantized_in_graph)
from seqlab.decoding.sampling import generate
from seqlab.decoding.search import beam_search, greedy_search
from seqlab.models import build_model
from seqlab.hardware import fp32_gemm_prefers_onednn, has_bf16_units
from seqlab.runs import for_inference
from tests.conftest import TINY_MODELS
from tests.decoding.test_search import sources

def assert_decodes_like(reference: nn.Module, model: nn.Module, score_tolerance: float) -> None:
    """Greedy and beam search give the reference's tokens, and scores within the tolerance."""
    src = sources([5, 9, 3, 7], seed=1)
    for search in (greedy_search, lambda m, s: beam_search(m, s, beam_size=3)):
        want, got = search(reference, src), search(model, src)
        assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
        for g, w in zip(got, want):
            assert g[0].score == pytest.approx(w[0].score, abs=score_tolerance)


needs_packing = pytest.mark.skipif(
    not can_pack(nn.Linear(2, 2).to(torch.bfloat16)), reason="needs a CPU with bf16 matrix units and oneDNN")


def test_packing_needs_bf16_weights_or_a_cpu_where_onednn_wins_fp32():
    assert can_pack(nn.Linear(2, 2)) == fp32_gemm_prefers_onednn()  # fp32 gains only where MKL is the slower
    assert not can_pack(nn.Identity())  # no weights at all


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN build of torch")
def test_packed_fp32_linear_equals_linear():
    torch.manual_seed(0)
    linear = nn.Linear(48, 80)
    packed = PackedLinear.of(linear)
    for shape in [(1, 48), (7, 3, 48), (200, 1, 48)]:
        x = torch.randn(shape)
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN build of torch")
def test_fp32_inference_packs_where_onednn_wins_and_decodes_the_same(monkeypatch):
    monkeypatch.setattr(packed_module, "fp32_gemm_prefers_onednn", lambda: True)
    monkeypatch.setattr(packed_module, "FP32_MIN_PACKED", 0)  # the tiny model's weights are all small
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS["transformer"](**TINY_MODELS["transformer"]), 20, 20).eval()
    packed = for_inference(model, "fp32")
    assert any(isinstance(m, PackedLinear) for m in packed.modules())
    assert_decodes_like(model, packed, score_tolerance=1e-4)


@needs_packing
def test_packed_linear_equals_linear_for_any_number_of_rows():
    torch.manual_seed(0)
    linear = nn.Linear(48, 80).to(torch.bfloat16)
    packed = PackedLinear.of(linear)
    for shape in [(1, 48), (7, 3, 48), (200, 1, 48)]:  # the reorder is tuned for 64 rows; any count works
        x = torch.randn(shape, dtype=torch.bfloat16)
        torch.testing.assert_close(packed(x), linear(x), atol=0, rtol=0)
    assert packed.dense is None and packed.packed is not None  # the blocked copy replaced the plain one
    without_bias = PackedLinear(linear.weight, None)
    torch.testing.assert_close(without_bias(x), F.linear(x, linear.weight), atol=0, rtol=0)


@needs_packing
@pytest.mark.parametrize("kind", ["transformer", "gpt", "rnn_seq2seq"])
def test_bf16_inference_packs_and_decodes_like_the_bf16_model(kind):
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 20, 20).eval()
    plain = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 20, 20).eval()
    plain.load_state_dict(model.state_dict())
    plain = plain.to(torch.bfloat16)
    packed = for_inference(model, "bf16")
    assert not any(isinstance(m, nn.Linear) for m in packed.modules())
    assert not any(isinstance(m, PackedLinear) for m in model.modules())  # the model passed in is untouched
    if kind == "gpt":
        for prompt in ([5, 6, 7], [9, 4]):
            want = generate(plain, prompt, max_new_tokens=8, num_samples=3, seed=1)
            assert generate(packed, prompt, max_new_tokens=8, num_samples=3, seed=1) == want
        return
    assert_decodes_like(plain, packed, score_tolerance=1e-3)


@needs_packing
def test_tied_output_layer_gets_a_packed_copy_of_the_embeddings():
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS["transformer"](**TINY_MODELS["transformer"]), 20, 20).eval().to(torch.bfloat16)
    assert model.output_proj is None  # tied
    y = torch.randn(3, 2, 32, dtype=torch.bfloat16)
    want = model.project(y)
    pack_linears(model)
    assert isinstance(model.output_proj, PackedLinear)
    torch.testing.assert_close(model.project(y), want, atol=0, rtol=0)
    assert model.output_weight() is None  # the training loss's fused path does not apply


@pytest.mark.parametrize("kind", ["transformer", "gpt"])
def test_fp32_inference_copy_fuses_attention_and_decodes_the_same(kind):
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 20, 20).eval()
    fused = for_inference(model, "fp32")
    assert fused is not model and all(m.qkv_proj is not None for m in fused.modules() if hasattr(m, "qkv_proj"))
    assert all(m.qkv_proj is None for m in model.modules() if hasattr(m, "qkv_proj"))  # the original is untouched
    if kind == "gpt":
        assert generate(fused, [5, 6, 7], max_new_tokens=8, num_samples=3, seed=1) == \
            generate(model, [5, 6, 7], max_new_tokens=8, num_samples=3, seed=1)
        return
    src = sources([5, 9, 3, 7], seed=1)
    want, got = beam_search(model, src, beam_size=3), beam_search(fused, src, beam_size=3)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    for g, w in zip(got, want):
        assert g[0].score == pytest.approx(w[0].score, abs=1e-5)


def test_small_fp32_weights_stay_unpacked():
    model = nn.Sequential(nn.Linear(128, 384), nn.Linear(512, 1536))
    pack_linears(model)
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], PackedLinear)



needs_int8 = pytest.mark.skipif(not can_quantize(nn.Linear(2, 2)),
                                reason="needs torch's oneDNN int8 linear and a CPU with int8 dot products (VNNI)")


def quantized_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The product Int8Linear promises, written out in float32: W ≈ s_w ⊙ W_q per output row,
    x ≈ s_x (x_q − z) over the whole tensor with 0 inside its range."""
    w_scale = weight.abs().amax(dim=1, keepdim=True) / 127
    w = torch.round(weight / w_scale) * w_scale
    x = x.float()
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (high - low) / 255
    zero_point = round(-low / scale)
    x = (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale
    return F.linear(x, w, bias)


@needs_int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_computes_the_quantized_product(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80).to(dtype)  # the output comes back in the weight's dtype, whatever x's
    for shape in [(1, 48), (7, 3, 48), (200, 1, 48)]:
        # float32 inputs, signed and ≥ 0 (as after a ReLU), and inputs in the layer's own dtype
        for x in (torch.randn(shape), torch.randn(shape).relu(), torch.randn(shape).to(dtype)):
            for layer, bias in ((Int8Linear.of(linear), linear.bias), (Int8Linear(linear.weight, None), None)):
                got = layer(x)
                assert got.dtype == dtype and got.shape == (*shape[:-1], 80)
                weight, bias = linear.weight.detach().float(), None if bias is None else bias.detach().float()
                want = quantized_reference(x, weight, bias)
                error = (got.float() - want).norm() / want.norm()
                assert error < (1e-2 if dtype == torch.bfloat16 else 1e-3), error  # bf16 output rounding
                exact = F.linear(x.float(), weight, bias)
                assert (got.float() - exact).norm() / exact.norm() < 0.03  # and int8 stays close to the float product
    assert layer.dense is None and layer.packed is not None  # the int8 copy replaced the plain weight
    assert layer(torch.empty(0, 48)).shape == (0, 80) and layer(torch.empty(0, 48)).dtype == dtype
    strided = torch.randn(48, 7).T  # a view, not contiguous
    assert torch.equal(layer(strided), layer(strided.contiguous()))
    with pytest.raises(ValueError, match="non-finite activations"):
        layer(torch.tensor([[float("nan")] * 48]))


@needs_int8
def test_int8_linear_under_compile_quantizes_in_tensor_ops_to_the_same_product():
    """What Int8Linear runs inside a compiled graph (quantized_in_graph, then the operator
    torch.ops.seqlab.int8_linear), called eagerly here: the same quantized product as outside it."""
    torch.manual_seed(0)
    linear = nn.Linear(48, 80).to(torch.bfloat16)
    layer = Int8Linear.of(linear)
    for x in (torch.randn(7, 3, 48).bfloat16(), torch.randn(200, 48).relu(), -torch.rand(5, 48)):
        want = layer(x)  # eager: torch.quantize_per_tensor with host-side scale and zero point
        x_q, scale, zero_point = quantized_in_graph(x)
        assert x_q.dtype == torch.uint8 and scale.dim() == zero_point.dim() == 0
        got = int8_quantized_product_op(x_q, scale, zero_point, layer.packed, layer.weight_scale,
                                        layer.weight_zero_point, layer.bias, 80, torch.bfloat16)
        assert got.shape == want.shape and got.dtype == torch.bfloat16
        reference = quantized_reference(x, linear.weight.detach().float(), linear.bias.detach().float())
        assert (got.float() - reference).norm() / reference.norm() < 1e-2
        assert (got.float() - want.float()).abs().max() <= 0.02 * want.float().abs().max()


@needs_int8
@pytest.mark.parametrize("kind, bf16_units", [(kind, True) for kind in TINY_MODELS] + [("transformer", False)])
def test_int8_inference_copy_runs_every_product_in_int8_and_stays_close(kind, bf16_units, monkeypatch):
    if bf16_units and not has_bf16_units(torch.device("cpu")):
        pytest.skip("needs a CPU with bf16 matrix units")
    monkeypatch.setattr("seqlab.hardware.has_bf16_units", lambda device: bf16_units)
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 20, 20).eval()
    int8 = for_inference(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())
    assert any(isinstance(m, Int8Linear) for m in int8.modules())
    compute = torch.bfloat16 if bf16_units else torch.float32  # everything between the products
    assert {p.dtype for p in int8.parameters()} == {compute}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the model passed in is untouched
    src = sources([5, 9, 3, 7], seed=1)
    inputs = {"gpt": (None, src), "rnn_lm": (None, src), "classifier": (src,),
              "vector_to_seq": (torch.randn(4, 40), src)}.get(kind, (src, src))
    want, got = model(*inputs), int8(*inputs)
    assert got.dtype == compute
    assert (got.float() - want).norm() / want.norm() < 0.05
    if kind in ("transformer", "rnn_seq2seq"):  # the cached searches run in the int8 copy too
        for search in (greedy_search, lambda m, s: beam_search(m, s, beam_size=3)):
            hyps = search(int8, src)
            assert len(hyps) == 4 and all(all(0 <= t < 20 for t in h[0].tokens) for h in hyps)
    elif kind in ("gpt", "rnn_lm"):
        samples = generate(int8, [5, 6, 7], max_new_tokens=8, num_samples=3, seed=1)
        assert len(samples) == 3 and all(0 <= t < 20 for sample in samples for t in sample)
