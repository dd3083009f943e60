"""Weights packed once for the CPU's matrix units decode like the model itself (bf16 exactly; fp32 where
oneDNN beats MKL, to float32 rounding)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import seqlab.decoding.packed as packed_module
from seqlab.config import MODEL_CONFIGS
from seqlab.decoding.packed import PackedLinear, can_pack, pack_linears
from seqlab.decoding.sampling import generate
from seqlab.decoding.search import beam_search, greedy_search
from seqlab.models import build_model
from seqlab.hardware import fp32_gemm_prefers_onednn
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

