"""Linear layers through oneDNN compute what F.linear computes, forward and backward.

The oneDNN route is taken only on CPUs that prefer it (AMD with AVX-512), but oneDNN runs on
any x86 CPU, so these tests force the route on and compare it with PyTorch's own products.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import seqlab.models.linear as linear_module
from seqlab.config import MODEL_CONFIGS
from seqlab.models import build_model
from seqlab.models.linear import Linear, _OneDNNLinear, as_torch_linears, linear, mm, routed, weight_grad
from seqlab.training.loss import output_cross_entropy
from tests.conftest import TINY_MODELS

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs a oneDNN build of torch")


@pytest.fixture
def onednn_route(monkeypatch):
    """Route float32 products to oneDNN whatever this CPU prefers, however small they are."""
    monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: True)
    monkeypatch.setattr(linear_module, "MIN_MULTIPLY_ADDS", 0)


@pytest.mark.parametrize("shape", [(7, 5, 96), (13, 96)])
@pytest.mark.parametrize("out_features", [40, 200])  # wider and narrower than in: both weight-gradient layouts
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_f_linear_forward_and_backward(shape, out_features, bias):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    layer = nn.Linear(96, out_features, bias=bias)
    inputs = (x, layer.weight) + ((layer.bias,) if bias else ())
    ours = _OneDNNLinear.apply(x, layer.weight, layer.bias)
    want = F.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(want).transpose(0, -1).contiguous().transpose(0, -1)  # a non-contiguous incoming gradient
    for got, expected in zip(torch.autograd.grad(ours, inputs, g), torch.autograd.grad(want, inputs, g)):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_mm_and_weight_grad_match_torch(onednn_route):
    torch.manual_seed(0)
    a, b = torch.randn(30, 50), torch.randn(50, 70)
    torch.testing.assert_close(mm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    out = torch.empty(30, 70)
    assert mm(a, b, out=out) is out
    torch.testing.assert_close(out, a @ b, rtol=1e-5, atol=1e-5)
    for n_out, n_in in [(90, 20), (20, 90)]:
        g, x = torch.randn(64, n_out), torch.randn(64, n_in)
        got = weight_grad(g, x)
        assert got.shape == (n_out, n_in) and got.is_contiguous()
        torch.testing.assert_close(got, g.t() @ x, rtol=1e-5, atol=1e-4)


def test_route_is_float32_cpu_without_autocast_only(onednn_route):
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    assert routed(x, w, 96)
    assert not routed(x.bfloat16(), w.bfloat16(), 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not routed(x, w, 96)
        assert linear(x, w.t()).dtype == torch.bfloat16  # autocast's own bf16 product


def test_small_products_stay_with_torch(monkeypatch):
    """A oneDNN call costs more than MKL's whole product below MIN_MULTIPLY_ADDS."""
    monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: True)
    w = torch.randn(384, 128, requires_grad=True)
    small, big = torch.randn(8, 128), torch.randn(256, 128)  # 0.4 M and 12.6 M multiply-adds
    assert not routed(small, w.t(), 8 * 128 * 384) and routed(big, w.t(), 256 * 128 * 384)
    assert type(linear(small, w).grad_fn).__name__ == "MmBackward0"  # F.linear without bias
    assert type(linear(big, w).grad_fn).__name__ == "_OneDNNLinearBackward"


def test_flop_counter_counts_the_onednn_products(onednn_route, monkeypatch):
    torch.manual_seed(0)
    layer, x = Linear(24, 40), torch.randn(6, 24, requires_grad=True)

    def flops() -> int:
        with FlopCounterMode(display=False) as counter:
            layer(x).sum().backward()
        return counter.get_total_flops()

    routed_flops = flops()
    monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: False)
    assert routed_flops == flops() == 3 * 2 * 6 * 24 * 40  # forward, ∂L/∂x, ∂L/∂W


@pytest.mark.parametrize("kind", ["transformer", "gpt"])
def test_training_step_through_onednn_matches_the_default_route(kind, monkeypatch):
    """Loss and every gradient of a model (its fused output loss included) agree across routes."""
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 20, 20)
    src, tgt_in, tgt_out = (torch.randint(1, 20, (3, 9)) for _ in range(3))

    def loss_and_grads():
        model.zero_grad()
        hidden = model(src, tgt_in, features_only=True)  # (B, T, C)
        loss = output_cross_entropy(hidden, model.output_weight(), tgt_out, label_smoothing=0.1)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: True)
    monkeypatch.setattr(linear_module, "MIN_MULTIPLY_ADDS", 0)
    loss, grads = loss_and_grads()
    monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: False)
    want_loss, want_grads = loss_and_grads()
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_as_torch_linears_keeps_the_parameters():
    model = nn.Sequential(Linear(4, 6), nn.ReLU(), nn.Sequential(Linear(6, 2, bias=False)))
    weights = [p for p in model.parameters()]
    x = torch.randn(3, 4)
    want = model(x)
    as_torch_linears(model)
    assert [type(m) for m in (model[0], model[2][0])] == [nn.Linear, nn.Linear]
    assert all(a is b for a, b in zip(model.parameters(), weights))
    torch.testing.assert_close(model(x), want)


def test_torch_compile_takes_its_own_kernels_with_the_route_on(onednn_route):
    """Under torch.compile the oneDNN route steps aside (inductor lowers F.linear itself); the
    compiled model's loss and gradients equal eager's."""
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS["transformer"](**TINY_MODELS["transformer"]), 20, 20)
    src, tgt_in, tgt_out = (torch.randint(1, 20, (3, 9)) for _ in range(3))

    def loss_and_grads(forward):
        model.zero_grad()
        loss = output_cross_entropy(forward(src, tgt_in, features_only=True), model.output_weight(), tgt_out)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    compiled_loss, compiled_grads = loss_and_grads(torch.compile(model))
    eager_loss, eager_grads = loss_and_grads(model)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
