import pytest
import torch

from seqlab.config import RNNSeq2SeqConfig
from seqlab.data.tokenizer import EOS, PAD
from seqlab.models import build_model
from seqlab.models.attention import RecurrentAttention


def seq2seq(**kw):
    torch.manual_seed(0)
    cfg = RNNSeq2SeqConfig(kind="rnn_seq2seq", embed_dim=16, hidden_size=32, **kw)
    return build_model(cfg, 30, 30).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (3, 8), generator=g)
    src[1, 5:] = PAD
    src[2, 2:] = PAD
    src[torch.arange(3), torch.tensor([7, 4, 1])] = EOS
    return src, torch.randint(4, 30, (3, 6), generator=g)


def test_dot_attention_is_the_lecture_formula():
    """c_t = Σ_i softmax_i(<s_t, h_i>) h_i, with source <pad> getting no weight."""
    torch.manual_seed(0)
    s, h = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    c, w = RecurrentAttention("dot", 4, 4)(s, h, mask)
    t, b = 1, 1
    expected_w = torch.softmax(torch.stack([s[b, t] @ h[b, i] for i in range(2)]), 0)
    torch.testing.assert_close(w[b, t, :2], expected_w)
    assert torch.all(w[1, :, 2:] == 0)
    torch.testing.assert_close(c[b, t], expected_w[0] * h[b, 0] + expected_w[1] * h[b, 1])


@pytest.mark.parametrize("score", ["general", "additive"])
def test_learned_scores_weights_sum_to_one_and_skip_padding(score):
    torch.manual_seed(0)
    att = RecurrentAttention(score, 6, 4)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    c, w = att(torch.randn(2, 3, 6), torch.randn(2, 5, 4), mask)
    assert c.shape == (2, 3, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    assert torch.all(w[1, :, 3:] == 0)


@pytest.mark.parametrize("attention", ["none", "dot", "general", "additive"])
@pytest.mark.parametrize("cell, bidirectional", [("rnn", False), ("lstm", True), ("gru", False)])
def test_padded_source_positions_change_no_output(attention, cell, bidirectional):
    model = seq2seq(attention=attention, cell=cell, bidirectional=bidirectional, n_layers=2)
    src, tgt = batch()
    with torch.no_grad():
        together = model(src, tgt)
        longer = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
        alone = model(src[2:, :2], tgt[2:])
        assert torch.allclose(model(longer, tgt), together, atol=1e-6)
    torch.testing.assert_close(together[2:], alone, atol=1e-6, rtol=1e-5)


def test_without_attention_the_decoder_sees_only_the_context_vector():
    """Plain seq2seq: two sources whose encoders end in the same state give the same outputs."""
    model = seq2seq(attention="none", cell="gru")
    src, tgt = batch()
    enc = model.encode(src)
    enc.memory = torch.randn_like(enc.memory)  # scramble every encoder state but the last one
    with torch.no_grad():
        torch.testing.assert_close(model.decode(tgt, enc), model(src, tgt))
    assert model.alignment(tgt, enc) is None


def test_alignment_shape_and_future_tokens():
    model = seq2seq(attention="additive", cell="lstm")
    src, tgt = batch()
    enc = model.encode(src)
    assert model.alignment(tgt, enc).shape == (3, 6, 8)
    changed = tgt.clone()
    changed[:, 4:] = 5
    with torch.no_grad():
        torch.testing.assert_close(model.decode(tgt, enc)[:, :4], model.decode(changed, enc)[:, :4])
