import json

import torch

from seqlab.analysis.gradients import GradientSettings, gradient_by_distance, probe_by_distance, run_gradients
from seqlab.analysis.plots import read_csv
from seqlab.config import GPTConfig, RNNLMConfig
from seqlab.models import build_model


def test_gradient_vanishes_through_tanh_but_not_through_attention():
    torch.manual_seed(0)
    rnn = build_model(RNNLMConfig(kind="rnn_lm", cell="rnn", embed_dim=16, hidden_size=32), 30, 30)
    gpt = build_model(GPTConfig(kind="gpt", d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0), 30, 30)
    tokens = torch.randint(4, 30, (16, 25), generator=torch.Generator().manual_seed(0))
    rnn_norms, gpt_norms = gradient_by_distance(rnn, tokens), gradient_by_distance(gpt, tokens)
    assert len(rnn_norms) == 24
    assert rnn_norms[-1] < 1e-3 * rnn_norms[1]  # geometric decay through the tanh chain
    assert gpt_norms[-1] > 0.05 * gpt_norms[1]  # one attention step away, whatever the distance


def test_probe_reads_recent_tokens_better_than_old_ones():
    torch.manual_seed(0)
    rnn = build_model(RNNLMConfig(kind="rnn_lm", cell="rnn", embed_dim=16, hidden_size=64), 12, 12)
    tokens = torch.randint(4, 12, (800, 15), generator=torch.Generator().manual_seed(1))
    accuracy = probe_by_distance(rnn, tokens)
    assert len(accuracy) == 15
    assert accuracy[0] > 90 and accuracy[-1] < 40  # chance is 12.5%


def test_tiny_gradient_experiment_writes_tables_and_plots(tmp_path):
    out = tmp_path / "g"
    result = run_gradients(GradientSettings(models=["rnn", "transformer"], length=8, steps=3, minutes=1,
                                            train_size=40, probe_size=64), out, log=lambda m: None)
    for name in ("gradients.csv", "probe.csv", "gradient_vs_distance.png", "probe_vs_distance.png", "experiment.json"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "gradients.csv")
    assert len(rows) == 2 * 2 * 8  # models × (fresh, trained) × distances
    assert {r["state"] for r in rows} == {"fresh", "trained"}
    assert set(json.loads((out / "experiment.json").read_text())["parameters"]) == {"rnn", "transformer"}
    assert len(result["probe"]) == 2 * 2 * 8
