import math

import pytest
import torch
from torch import nn

from seqlab.config import TransformerConfig
from seqlab.models import build_model, count_parameters
from seqlab.models.transformer import SinusoidalPositionalEncoding, Transformer

PAD = 0


def small_cfg(**kw) -> TransformerConfig:
    base = dict(d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0, max_positions=64)
    base.update(kw)
    return TransformerConfig(**base)


def _copy_mha(dst: nn.MultiheadAttention, src) -> None:
    dst.in_proj_weight.copy_(torch.cat([src.q_proj.weight, src.k_proj.weight, src.v_proj.weight]))
    dst.in_proj_bias.copy_(torch.cat([src.q_proj.bias, src.k_proj.bias, src.v_proj.bias]))
    dst.out_proj.weight.copy_(src.out_proj.weight)
    dst.out_proj.bias.copy_(src.out_proj.bias)


def _copy_ln(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


def reference_from(model: Transformer, cfg: TransformerConfig) -> nn.Transformer:
    """torch.nn.Transformer of the same configuration with our weights copied in."""
    ref = nn.Transformer(
        cfg.d_model, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.d_ff,
        dropout=0.0, batch_first=True, norm_first=cfg.layer_norm == "pre",
    )
    with torch.no_grad():
        for ours, theirs in zip(model.encoder_layers, ref.encoder.layers):
            _copy_mha(theirs.self_attn, ours.self_attn)
            theirs.linear1.load_state_dict(ours.ffn.linear1.state_dict())
            theirs.linear2.load_state_dict(ours.ffn.linear2.state_dict())
            _copy_ln(theirs.norm1, ours.attn_block.norm)
            _copy_ln(theirs.norm2, ours.ffn_block.norm)
        for ours, theirs in zip(model.decoder_layers, ref.decoder.layers):
            _copy_mha(theirs.self_attn, ours.self_attn)
            _copy_mha(theirs.multihead_attn, ours.cross_attn)
            theirs.linear1.load_state_dict(ours.ffn.linear1.state_dict())
            theirs.linear2.load_state_dict(ours.ffn.linear2.state_dict())
            _copy_ln(theirs.norm1, ours.self_attn_block.norm)
            _copy_ln(theirs.norm2, ours.cross_attn_block.norm)
            _copy_ln(theirs.norm3, ours.ffn_block.norm)
        if cfg.layer_norm == "pre":
            _copy_ln(ref.encoder.norm, model.encoder_norm)
            _copy_ln(ref.decoder.norm, model.decoder_norm)
    if cfg.layer_norm == "post":
        # nn.Transformer always ends each stack with a LayerNorm; the paper's post-LN model does not.
        ref.encoder.norm = None
        ref.decoder.norm = None
    return ref.eval()


def random_batch(vocab: int, lengths_src, lengths_tgt, seed=0):
    g = torch.Generator().manual_seed(seed)
    S, T = max(lengths_src), max(lengths_tgt)
    src = torch.randint(4, vocab, (len(lengths_src), S), generator=g)
    tgt = torch.randint(4, vocab, (len(lengths_tgt), T), generator=g)
    for i, (ls, lt) in enumerate(zip(lengths_src, lengths_tgt)):
        src[i, ls:] = PAD
        tgt[i, lt:] = PAD
    return src, tgt


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_equals_torch_transformer_with_copied_weights(layer_norm, impl):
    torch.manual_seed(0)
    cfg = small_cfg(layer_norm=layer_norm, attention_impl=impl)
    model = build_model(cfg, 50, 50, PAD).eval()
    ref = reference_from(model, cfg)
    src, tgt = random_batch(50, [9, 6, 3], [7, 4, 2])

    def embed(tokens):
        return model.tgt_embed(tokens) * math.sqrt(cfg.d_model) + model.positions(tokens.size(1))

    with torch.no_grad():
        ours = model(src, tgt)
        hidden = ref(
            embed(src), embed(tgt),
            tgt_mask=nn.Transformer.generate_square_subsequent_mask(tgt.size(1)),
            src_key_padding_mask=src == PAD, memory_key_padding_mask=src == PAD,
        )
        theirs = hidden @ model.tgt_embed.weight.T
    real = tgt != PAD  # outputs at target <pad> positions are never used
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_future_target_tokens_change_no_earlier_output():
    torch.manual_seed(0)
    model = build_model(small_cfg(), 30, 30).eval()
    src, tgt = random_batch(30, [6, 6], [8, 8])
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(4, 30, (2, 3))
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=0, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_padded_source_positions_change_no_output():
    torch.manual_seed(0)
    model = build_model(small_cfg(), 30, 30).eval()
    src, tgt = random_batch(30, [8, 4], [5, 5])
    with torch.no_grad():
        a = model(src, tgt)
        # Same sentence, longer padding: the padded tail must not matter.
        longer = torch.cat([src, torch.full((2, 3), PAD)], dim=1)
        b = model(longer, tgt)
        # A shorter sentence padded in a batch vs. alone.
        alone = model(src[1:, :4], tgt[1:])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a[1:], alone, atol=1e-6, rtol=1e-5)


def test_sinusoidal_encoding_matches_the_formula():
    pe = SinusoidalPositionalEncoding(8, 50)(50)
    pos, i = 17, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 8)), abs=1e-6)


def expected_parameter_count(d, n_enc, n_dec, d_ff, vocab, shared=True, tied=True):
    """From the layer shapes: W (in × out) + b for every Linear, γ and β for every LayerNorm."""
    linear = lambda i, o: i * o + o  # noqa: E731
    attention = 4 * linear(d, d)  # W^Q, W^K, W^V, W^O
    ffn = linear(d, d_ff) + linear(d_ff, d)
    layer_norm = 2 * d
    encoder = n_enc * (attention + ffn + 2 * layer_norm)
    decoder = n_dec * (2 * attention + ffn + 3 * layer_norm)
    embeddings = vocab * d * (1 if shared else 2)
    output = 0 if tied else vocab * d
    return embeddings + encoder + decoder + output


def test_paper_base_configuration_parameter_count():
    cfg = TransformerConfig()  # defaults are the paper's base model
    with torch.device("meta"):
        model = build_model(cfg, 37000, 37000)
    n = count_parameters(model)
    assert n == expected_parameter_count(512, 6, 6, 2048, 37000)
    assert 60e6 < n < 66e6  # the paper reports 65M


def test_untied_unshared_count():
    cfg = small_cfg(share_embeddings=False, tie_output=False)
    model = build_model(cfg, 40, 50)
    expected = expected_parameter_count(32, 2, 2, 64, 0) + 40 * 32 + 50 * 32 + 50 * 32
    assert count_parameters(model) == expected


def test_too_long_input_is_a_clear_error():
    model = build_model(small_cfg(max_positions=8), 20, 20)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
