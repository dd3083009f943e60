import pytest
import torch

from seqlab.config import ClassifierConfig, VectorToSeqConfig
from seqlab.data.tokenizer import PAD
from seqlab.models import build_model


@pytest.mark.parametrize("encoder", ["rnn", "lstm", "gru", "transformer"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_ignores_padding(encoder, pooling):
    torch.manual_seed(0)
    model = build_model(ClassifierConfig(kind="classifier", encoder=encoder, pooling=pooling, embed_dim=16,
                                         hidden_size=24, n_heads=2, d_ff=32, dropout=0.0), 30, 3).eval()
    src = torch.randint(4, 30, (2, 7), generator=torch.Generator().manual_seed(0))
    src[1, 4:] = PAD
    with torch.no_grad():
        together = model(src)
        alone = model(src[1:, :4])
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)


def test_regression_outputs_one_number():
    model = build_model(ClassifierConfig(kind="classifier", objective="regress", embed_dim=8, hidden_size=8), 20, 1)
    assert model(torch.randint(4, 20, (5, 6))).shape == (5,)


@pytest.mark.parametrize("condition", ["init_state", "prefix"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_vector_conditions_the_whole_output(condition, cell):
    torch.manual_seed(0)
    model = build_model(VectorToSeqConfig(kind="vector_to_seq", input_dim=6, condition=condition, cell=cell,
                                          n_layers=2, embed_dim=8, hidden_size=12), 0, 20).eval()
    tgt = torch.randint(4, 20, (1, 5))
    v = torch.randn(2, 6)
    with torch.no_grad():
        out = model(v, tgt.expand(2, -1))
    assert out.shape == (2, 5, 20)
    assert not torch.allclose(out[0], out[1])  # another vector, another sequence
    enc = model.encode(v)
    assert enc.src_mask.shape == (2, 1) and enc.state[0].shape == (2, 2, 12)
