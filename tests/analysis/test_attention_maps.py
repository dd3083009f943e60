import pytest
import torch

from seqlab.analysis.attention_maps import attention_maps, draw_attention
from seqlab.config import parse_config
from seqlab.errors import UserError
from seqlab.runs import load_model
from seqlab.training.trainer import train
from tests.conftest import kind_config_tree


@pytest.fixture(scope="module")
def trained_runs(task_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_runs")
    runs = {}
    for name, kind, change in (("transformer", "transformer", {}), ("additive", "rnn_seq2seq", {}),
                               ("plain", "rnn_seq2seq", {"attention": "none", "bidirectional": False}),
                               ("gpt", "gpt", {})):
        tree = kind_config_tree(kind, task_data, root / name, max_steps=3)
        tree["model"].update(change)
        train(parse_config(tree), progress=False)
        runs[name] = load_model(root / name)
    return runs


def test_transformer_maps_per_layer_and_head(trained_runs, tmp_path):
    maps, labels = attention_maps(trained_runs["transformer"], "a b c d")
    assert set(maps) == {"encoder self-attention, layer 1", "decoder masked self-attention, layer 1",
                         "encoder-decoder attention, layer 1"}
    enc = maps["encoder self-attention, layer 1"]
    dec = maps["decoder masked self-attention, layer 1"]
    cross = maps["encoder-decoder attention, layer 1"]
    S, T = len(labels["encoder self-attention"][0]), len(labels["decoder masked self-attention"][0])
    assert enc.shape == (2, S, S) and dec.shape == (2, T, T) and cross.shape == (2, T, S)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, T))
    assert torch.all(dec.triu(1) == 0), "the decoder may not look ahead"
    assert labels["encoder self-attention"][0][-1] == "<eos>" and labels["decoder masked self-attention"][0][0] == "<bos>"
    paths = draw_attention(maps, labels, tmp_path / "maps", "a b c d")
    assert len(paths) == 1 + 3 * 2 and all(p.stat().st_size > 0 for p in paths)


def test_seq2seq_alignment_and_gpt(trained_runs, tmp_path):
    maps, labels = attention_maps(trained_runs["additive"], "a b c")
    (alignment,) = maps.values()
    src_labels, tgt_labels = labels["alignment"]
    assert alignment.shape == (1, len(tgt_labels), len(src_labels))
    torch.testing.assert_close(alignment.sum(-1), torch.ones(1, len(tgt_labels)))
    maps, labels = attention_maps(trained_runs["gpt"], "the cat sees a dog .")
    assert list(maps) == ["self-attention, block 1"] and maps["self-attention, block 1"].shape[-1] == 1 + 6
    assert len(draw_attention(maps, labels, tmp_path / "gpt", "the cat")) == 1 + 2


def test_models_without_attention_are_a_clear_error(trained_runs):
    with pytest.raises(UserError, match="no attention"):
        attention_maps(trained_runs["plain"], "a b")
