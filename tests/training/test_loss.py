import pytest
import torch

from seqlab.config import GPTConfig, TransformerConfig
from seqlab.data.batching import Example, collate
import seqlab.models.linear as linear_module
from seqlab.models import build_model
from seqlab.training.loss import batch_loss, output_cross_entropy, token_cross_entropy


def _problem(V=50, C=16, B=5, T=130, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g).requires_grad_()
    weight = (torch.randn(V, C, generator=g) * 0.3).requires_grad_()
    target = torch.randint(1, V, (B, T), generator=g)
    target[0, 100:] = 0  # <pad>
    target[-1, 7:] = 0
    return hidden, weight, target


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [None, 1, 2**30], ids=["cpu-default", "16-rows", "whole"])
def test_fused_output_loss_equals_cross_entropy_of_the_logits(smoothing, chunk):
    """Same loss and gradients as logits = h Wᵀ then F.cross_entropy, over many row chunks
    (the CPU's default: 104 rows, 12 chunks; the fewest rows a chunk takes, 16; one chunk)."""
    hidden, weight, target = _problem(V=20_000, C=8, B=3, T=400)
    ref = token_cross_entropy(hidden @ weight.t(), target, smoothing)
    ref.backward()
    ref_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = output_cross_entropy(hidden, weight, target, smoothing, chunk=chunk)
    (got * 0.5).backward()  # the incoming gradient scales what was computed on the way
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(hidden.grad, ref_grads[0] * 0.5, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(weight.grad, ref_grads[1] * 0.5, rtol=1e-4, atol=1e-6)
    assert hidden.grad[0, 100:].abs().max() == 0  # <pad> positions get no gradient


@pytest.mark.parametrize("V, C", [(20_000, 8), (8, 64)], ids=["tall", "wide"])
def test_fused_output_loss_through_onednn_sums_the_chunks_like_torch(monkeypatch, V, C):
    """With float32 products routed to oneDNN (AMD's AVX-512 cores), ∂L/∂W of a tall output layer
    (V > C) is summed over the chunks in its transposed layout and transposed once at the end."""
    hidden, weight, target = _problem(V=V, C=C)

    def loss_and_grads(route: bool):
        monkeypatch.setattr(linear_module, "fp32_gemm_prefers_onednn", lambda: route)
        monkeypatch.setattr(linear_module, "MIN_MULTIPLY_ADDS", 0)
        hidden.grad = weight.grad = None
        loss = output_cross_entropy(hidden, weight, target, 0.1, chunk=16 * V)  # 16 rows a chunk
        loss.backward()
        return loss.detach(), hidden.grad.clone(), weight.grad.clone()

    for got, want in zip(loss_and_grads(True), loss_and_grads(False)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fused_output_loss_under_bf16_autocast_and_without_grad():
    hidden, weight, target = _problem()
    ref = token_cross_entropy(hidden @ weight.t(), target, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = output_cross_entropy(hidden, weight, target, 0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-3, atol=0)
    got.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(output_cross_entropy(hidden, weight, target, 0.1), ref.detach(), rtol=1e-5, atol=1e-3)


def test_fused_output_loss_sums_the_weight_gradient_in_float32_under_autocast():
    """Several row chunks (V = 20,000 → 104 rows each): the float32 master weight gets the float32
    sum of the chunks' bf16 products, not a sum rounded to bfloat16 on its way back."""
    hidden, weight, target = _problem(V=20_000)
    ref_grad = torch.autograd.grad(token_cross_entropy(hidden @ weight.t(), target, 0.1), weight)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output_cross_entropy(hidden, weight, target, 0.1).backward()
    assert weight.grad.dtype == torch.float32
    assert not torch.equal(weight.grad, weight.grad.bfloat16().float())
    torch.testing.assert_close(weight.grad, ref_grad, rtol=0.05, atol=0.02 * ref_grad.abs().max().item())


@pytest.mark.parametrize("cfg", [
    TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0),
    TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0,
                      tie_output=False, share_embeddings=False),
    GPTConfig(kind="gpt", d_model=32, n_heads=4, n_layers=1, d_ff=64, dropout=0.0),
], ids=["transformer", "untied", "gpt"])
def test_batch_loss_of_transformers_equals_the_loss_of_their_logits(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, 30, 30)
    seqs = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    batch = collate([Example(i, s, s[::-1]) for i, s in enumerate(seqs)])
    fused = batch_loss(model, batch, 0.1)
    fused.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    plain = token_cross_entropy(model(batch.src, batch.tgt_in), batch.tgt_out, 0.1)
    plain.backward()
    torch.testing.assert_close(fused, plain)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
