import json

import pytest

from seqlab.analysis.length_buckets import bucket_edges, run_length_buckets
from seqlab.analysis.plots import read_csv
from seqlab.analysis.report import write_report
from seqlab.config import parse_config
from seqlab.errors import UserError
from seqlab.training.trainer import train
from tests.conftest import kind_config_tree


@pytest.fixture(scope="module")
def two_runs(task_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report_runs")
    for name, kind in (("transformer", "transformer"), ("attention", "rnn_seq2seq")):
        train(parse_config(kind_config_tree(kind, task_data, root / name, max_steps=4)), progress=False)
    return root


def test_bucket_edges_cover_every_length():
    assert bucket_edges([3, 9, 14, 27], 10) == [(0, 9), (10, 19), (20, 29)]
    assert bucket_edges([12, 15], 5) == [(10, 14), (15, 19)]


def test_length_buckets_score_every_sentence_once(two_runs, task_data, tmp_path):
    data = task_data["reverse"]
    out = tmp_path / "lb"
    rows = run_length_buckets([two_runs / "transformer", two_runs / "attention"], data / "test.src",
                              data / "test.tgt", out, width=2, log=lambda m: None)
    for name in ("length_buckets.csv", "bleu_vs_length.png", "experiment.json", "transformer.hyp"):
        assert (out / name).exists(), name
    for model in ("transformer", "attention"):
        assert sum(r["sentences"] for r in rows if r["model"] == model) == 20
    assert len(read_csv(out / "length_buckets.csv")) == len(rows)
    assert all(0 <= r["bleu"] <= 100 for r in rows)
    with pytest.raises(UserError, match="already holds an experiment"):
        run_length_buckets([two_runs / "transformer"], data / "test.src", data / "test.tgt", out, log=lambda m: None)


def test_run_report_is_self_contained_html(two_runs):
    path = write_report(two_runs / "transformer")
    html = path.read_text()
    assert path == two_runs / "transformer" / "report.html"
    for needle in ("<!DOCTYPE html>", "Configuration", "Curves",
                   "Examples from the dev set", "Attention maps", "data:image/png;base64,"):
        assert needle in html, needle
    assert "src=\"http" not in html  # nothing fetched from elsewhere


def test_experiment_report_has_tables_and_figures(two_runs, task_data, tmp_path):
    data = task_data["reverse"]
    run_length_buckets([two_runs / "attention"], data / "test.src", data / "test.tgt", tmp_path / "lb",
                       width=3, log=lambda m: None)
    html = write_report(tmp_path / "lb").read_text()
    assert "BLEU by source length" in html and html.count("data:image/png;base64,") == 1
    assert json.loads((tmp_path / "lb" / "experiment.json").read_text())["width"] == 3


def test_report_of_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="neither a run directory"):
        write_report(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "missing")
