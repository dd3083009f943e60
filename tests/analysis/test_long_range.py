import json

import pytest

from seqlab.analysis.long_range import LongRangeSettings, format_table, position_accuracy, run_long_range
from seqlab.analysis.plots import read_csv
from seqlab.errors import UserError


def test_position_accuracy_counts_each_output_position():
    hyps, refs = ["a b c", "a x", ""], ["a b c", "a b c", "a b c"]
    assert position_accuracy(hyps, refs, 3) == pytest.approx([200 / 3, 100 / 3, 100 / 3])


def test_tiny_long_range_writes_tables_and_plots(tmp_path):
    settings = LongRangeSettings(tasks=["reverse"], lengths=[3, 6], models=["rnn", "lstm+attention", "transformer"],
                                 steps=4, minutes=1, train_size=60)
    rows = run_long_range(settings, tmp_path / "lr", log=lambda m: None)
    out = tmp_path / "lr"
    for name in ("results.csv", "positions.csv", "exact_vs_length.png", "accuracy_vs_position.png",
                 "experiment.json"):
        assert (out / name).stat().st_size > 0, name
    table = read_csv(out / "results.csv")
    assert len(table) == len(rows) == 2 * 3
    assert {r["model"] for r in table} == {"rnn", "lstm+attention", "transformer"}
    for length in (3, 6):
        same = [r for r in rows if r["length"] == length]
        reference = next(r["parameters"] for r in same if r["model"] == "transformer")
        assert all(abs(r["parameters"] / reference - 1) <= 0.10 for r in same)
        assert all(r["steps"] == 4 and 0 <= r["exact_match"] <= 100 for r in same)
    assert len(read_csv(out / "positions.csv")) == 3 * (3 + 6)
    assert json.loads((out / "experiment.json").read_text())["experiment"] == "long-range"
    assert "Transformer" in format_table(rows) and "tanh RNN seq2seq" in format_table(rows)
    with pytest.raises(UserError, match="already holds an experiment"):
        run_long_range(settings, out)


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'cnn'"):
        run_long_range(LongRangeSettings(models=["cnn"]), tmp_path / "x")
    with pytest.raises(UserError, match="not copy or reverse"):
        run_long_range(LongRangeSettings(tasks=["sort"]), tmp_path / "x")
    assert not (tmp_path / "x").exists()
