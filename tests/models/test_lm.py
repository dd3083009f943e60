import pytest
import torch
from torch import nn

from seqlab.config import GPTConfig, RNNLMConfig
from seqlab.models import build_model


def gpt(**kw):
    torch.manual_seed(0)
    return build_model(GPTConfig(kind="gpt", d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, **kw), 40, 40)


def rnn_lm(cell):
    torch.manual_seed(0)
    return build_model(RNNLMConfig(kind="rnn_lm", cell=cell, embed_dim=16, hidden_size=24, n_layers=2), 40, 40)


@pytest.mark.parametrize("make", [gpt, lambda: gpt(attention_impl="manual"), lambda: rnn_lm("rnn"),
                                  lambda: rnn_lm("lstm"), lambda: rnn_lm("gru")])
def test_output_at_t_ignores_tokens_after_t(make):
    model = make().eval()
    tokens = torch.randint(4, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[:, 6:] = torch.randint(4, 40, (2, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model.decode(tokens), model.decode(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    assert model.encode(None) is None


def test_gpt_block_equals_torch_pre_ln_encoder_layer_with_causal_mask():
    model = gpt().eval()
    block = model.blocks[0]
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([block.attn.q_proj.weight, block.attn.k_proj.weight,
                                                      block.attn.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([block.attn.q_proj.bias, block.attn.k_proj.bias,
                                                    block.attn.v_proj.bias]))
        ref.self_attn.out_proj.load_state_dict(block.attn.out_proj.state_dict())
        ref.linear1.load_state_dict(block.mlp.linear1.state_dict())
        ref.linear2.load_state_dict(block.mlp.linear2.state_dict())
        ref.norm1.load_state_dict(block.attn_block.norm.state_dict())
        ref.norm2.load_state_dict(block.mlp_block.norm.state_dict())
        x = torch.randn(2, 7, 32)
        expected = ref(x, src_mask=nn.Transformer.generate_square_subsequent_mask(7), is_causal=True)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_gpt_ties_output_to_embeddings_and_counts_parameters():
    model = gpt()
    d, V, L, P, F = 32, 40, 2, 512, 64
    per_block = 4 * (d * d + d) + (d * F + F) + (F * d + d) + 2 * 2 * d
    assert sum(p.numel() for p in model.parameters()) == V * d + P * d + L * per_block + 2 * d
    assert model.head is None


def test_gpt_refuses_sequences_longer_than_its_context():
    model = gpt(max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model.decode(torch.ones(1, 9, dtype=torch.long))
