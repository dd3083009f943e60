"""LayerNorm keeps a bfloat16 residual stream in bfloat16 under bf16 autocast, with float32
statistics and float32 γ, β and their gradients; everywhere else it is nn.LayerNorm."""

import torch
from torch import nn

from seqlab.config import TransformerConfig
from seqlab.models.layer_norm import LayerNorm, to_compute_dtype
from seqlab.models.transformer import Transformer


def pair(C=48):
    torch.manual_seed(0)
    ours, ref = LayerNorm(C), nn.LayerNorm(C)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_outside_autocast_it_is_nn_layer_norm():
    ours, ref = pair()
    x = torch.randn(4, 7, 48) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.float16):  # float16 keeps autocast's float32 residual
        assert ours(x).dtype == torch.float32


def test_under_bf16_autocast_output_is_bf16_and_follows_float32():
    ours, ref = pair()
    x = (torch.randn(4, 7, 48) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    upstream = torch.randn(4, 7, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.bfloat16
    want = ref(x_ref)
    torch.testing.assert_close(y.float(), want, atol=5e-2, rtol=2e-2)
    (y.float() * upstream).sum().backward()
    (want * upstream).sum().backward()
    assert ours.weight.grad.dtype == ours.bias.grad.dtype == torch.float32  # master weights' gradients
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=0.3, rtol=3e-2)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=0.3, rtol=3e-2)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=0.1, rtol=5e-2)


def test_transformer_residual_stream_is_bf16_under_bf16_autocast():
    torch.manual_seed(0)
    for norm in ("post", "pre"):
        model = Transformer(TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1,
                                              d_ff=64, dropout=0.0, layer_norm=norm), 20, 20)
        src, tgt = torch.randint(4, 20, (3, 6)), torch.randint(4, 20, (3, 5))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert to_compute_dtype(torch.zeros(2)).dtype == torch.bfloat16
            enc = model.encode(src)
            hidden = model.decode(tgt, enc, features_only=True)
        assert enc.memory.dtype == hidden.dtype == torch.bfloat16
        torch.testing.assert_close(hidden.float(), model.decode(tgt, model.encode(src), features_only=True),
                                   atol=0.15, rtol=0.05)
