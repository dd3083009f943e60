import pytest
import torch
from torch import nn

from seqlab.models.dropout import Dropout, dropout, keep_mask, random_words, relu_dropout, residual_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keeps_each_unit_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([1000, 1001]), p)  # an odd count: not a multiple of the 4 draws per word
    assert mask.shape == (1000, 1001) and mask.dtype == torch.bool
    assert mask.float().mean().item() == pytest.approx(1 - p, abs=0.003)  # ~6 standard errors
    # no structure across the four 16-bit lanes of each 64-bit draw (the sign bit included)
    lanes = mask.flatten()[: 1000 * 1000].view(-1, 4).float().mean(0)
    torch.testing.assert_close(lanes, torch.full((4,), 1 - p), atol=0.005, rtol=0)
    as_bf16 = keep_mask(torch.Size([1000, 1001]), p, torch.bfloat16)  # written straight in the activation's dtype
    assert as_bf16.dtype == torch.bfloat16 and set(as_bf16.unique().tolist()) == {0.0, 1.0}
    assert as_bf16.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    torch.manual_seed(1)
    bool_mask = keep_mask(torch.Size([999, 77]), p)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):  # 16-bit floats take the integer route
        torch.manual_seed(1)
        scaled = keep_mask(torch.Size([999, 77]), p, dtype, value=1 / (1 - p))
        torch.testing.assert_close(scaled, bool_mask.to(dtype) * torch.tensor(1 / (1 - p), dtype=dtype), atol=0, rtol=0)


def test_long_masks_drawn_on_several_threads_are_reproducible_and_unstructured():
    torch.set_num_threads(2)
    torch.manual_seed(5)
    words = random_words(1 << 20)  # four slices' worth: drawn on two threads
    torch.manual_seed(5)
    assert torch.equal(random_words(1 << 20), words)
    halves = words.chunk(2)
    assert not torch.equal(halves[0], halves[1])  # the slices' generators are seeded apart
    ones = [torch.bitwise_and(half[:, None], 1 << torch.arange(0, 63, 7)).ne(0).float().mean().item() for half in halves]
    assert ones == pytest.approx([0.5, 0.5], abs=0.003)  # bits fair in both slices


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zeroes_and_rescales_like_nn_dropout(dtype):
    torch.manual_seed(0)
    x = torch.rand(64, 300).add(0.5).to(dtype).requires_grad_()
    out = dropout(x, 0.2)
    assert out.dtype == dtype
    kept = out != 0
    torch.testing.assert_close(out[kept], (x[kept] / 0.8).to(dtype))
    out.sum().backward()  # d out_i / d x_i = m_i / (1 − p)
    torch.testing.assert_close(x.grad, kept.to(dtype) / 0.8)
    # unbiased: E[out] = x, like nn.Dropout (mean over 19,200 units, each ±1/0.8)
    assert out.float().mean().item() == pytest.approx(x.float().mean().item(), rel=0.02)


def test_identity_in_eval_and_at_p_zero_and_reproducible_under_a_seed():
    x = torch.randn(8, 16)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and dropout(x, 0.0) is x
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    torch.testing.assert_close(layer(x), a)  # masks come from the default generator
    assert not torch.equal(layer(x), a)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_drops_as_often_as_nn_dropout():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    ours = (Dropout(0.1)(x) == 0).float().mean().item()
    theirs = (nn.Dropout(0.1)(x) == 0).float().mean().item()
    assert ours == pytest.approx(theirs, abs=0.004)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_residual_and_relu_dropout_equal_the_separate_steps(dtype):
    """residual + Dropout(x) and Dropout(ReLU(x)) fused: same mask for the same seed, same values
    and the same gradients as the separate operations; plain ops in eval."""
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    for fused, separate in ((lambda r, x: residual_dropout(r, x, 0.3), lambda r, x: r + dropout(x, 0.3)),
                            (lambda r, x: relu_dropout(x, 0.3), lambda r, x: dropout(torch.relu(x), 0.3))):
        results = []
        for f in (fused, separate):
            torch.manual_seed(0)
            r = torch.randn(16, 40).to(dtype).requires_grad_()
            x = torch.randn(16, 40).to(dtype).requires_grad_()
            upstream = torch.randn(16, 40).to(dtype)
            torch.manual_seed(7)
            out = f(r, x)
            (out * upstream).sum().backward()
            results.append((out, x.grad, r.grad))
        (out, gx, gr), (want, want_gx, want_gr) = results
        assert out.dtype == dtype and 0.2 < (gx == 0).float().mean() < 0.85  # some units dropped (or below 0)
        torch.testing.assert_close(out, want, **tol)
        torch.testing.assert_close(gx, want_gx, **tol)
        if want_gr is not None:
            torch.testing.assert_close(gr, want_gr, **tol)
    r, x = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(residual_dropout(r, x, 0.3, training=False), r + x)
    torch.testing.assert_close(relu_dropout(x, 0.3, training=False), torch.relu(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_graphs_drop_out_with_their_own_masks(dtype):
    """Under torch.compile (``train.compile``) dropout is PyTorch's, which the compiler lowers
    itself, in one graph: the eager CPU masks (int64 words read as int16, a Python scalar from
    ``.item()``) broke the graph. aot_eager: the tracing of inductor, without a C++ compiler."""
    def sublayer(r, x):
        return residual_dropout(r, relu_dropout(x, 0.25), 0.25)

    compiled = torch.compile(sublayer, backend="aot_eager", fullgraph=True)
    torch.manual_seed(0)
    r = torch.randn(64, 256).to(dtype).requires_grad_()
    x = torch.rand(64, 256).add(0.5).to(dtype).requires_grad_()  # positive: ReLU passes every unit
    out = compiled(r, x)
    out.sum().backward()
    assert out.dtype == dtype
    # each unit of x kept by both masks (scaled by 1/0.75²) or by neither; 56% kept by both
    delta = (out - r).detach().float()
    kept = delta != 0
    torch.testing.assert_close(delta[kept], x.detach().float()[kept] / 0.75**2, atol=2e-2, rtol=2e-2)
    assert kept.float().mean().item() == pytest.approx(0.75**2, abs=0.02)
    torch.testing.assert_close(x.grad.float(), kept.float() / 0.75**2, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(r.grad, torch.ones_like(r))


def test_a_compiled_transformer_trains_in_bf16_with_dropout():
    """``train.compile`` with ``precision: bf16`` on CPU: the eager masks' int64-as-int16 views
    made AOT autograd's replay of the graph's outputs fail (setStorage out of bounds)."""
    from seqlab.config import TransformerConfig
    from seqlab.models import build_model
    from seqlab.training.loss import output_cross_entropy

    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.1,
                            max_positions=64)
    model = build_model(cfg, 50, 50).train()
    compiled = torch.compile(model, backend="aot_eager")
    src, tgt = torch.randint(4, 50, (4, 7)), torch.randint(4, 50, (4, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = output_cross_entropy(compiled(src, tgt, features_only=True), model.output_weight(), tgt)
    loss.backward()
    with torch.no_grad():
        model.eval()
        eager = output_cross_entropy(model(src, tgt, features_only=True), model.output_weight(), tgt)
    assert loss.item() == pytest.approx(eager.item(), rel=0.1)  # the same model, dropout and bf16 aside
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
