"""benchmarks/bench.py's bookkeeping: which engine is measured when, and which figure counts.

The measurements themselves run in subprocesses for minutes (``make bench``); here ``measure``
is replaced by a recorder that returns made-up figures, so what is checked is the choice among
repeated measurements, the order of the rounds, and the JSON rows they end in.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("seqlab_bench_under_test", BENCH_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recording(figures: dict):
    """A stand-in for ``measure``: each call's args recorded, its result the next figure queued
    for that (kind, engine, precision)."""
    calls = []

    def measure(args):
        calls.append(args)
        kind, impl, _size, precision, _extra = args
        found = figures[(kind, impl, precision)].pop(0)
        return dict(found) if isinstance(found, dict) else found(args)

    return measure, calls


def test_faster_of_keeps_the_faster_notes_every_run_and_the_larger_rss(bench):
    first = {"tok_s": 10.0, "peak_rss_mb": 500.0, "s_per_step": 0.4}
    second = {"tok_s": 12.0, "peak_rss_mb": 450.0, "s_per_step": 0.33}
    third = {"tok_s": 11.0, "peak_rss_mb": 520.0, "s_per_step": 0.36}
    kept = bench.faster_of(bench.faster_of(first, second), third)
    assert kept["tok_s"] == 12.0 and kept["s_per_step"] == 0.33
    assert kept["tok_s_runs"] == [10.0, 12.0, 11.0]
    assert kept["peak_rss_mb"] == 520.0
    failed = {"error": "exit 1"}
    assert bench.faster_of({}, first) == first
    assert bench.faster_of(failed, first) == first
    assert bench.faster_of(first, failed) == first
    assert bench.faster_of({}, failed) == failed


def train(tok_s, rss=1000.0):
    return {"tok_s": tok_s, "s_per_step": 4096 / tok_s, "flops_per_step": 1e11, "peak_rss_mb": rss}


def decode(tok_s):
    return lambda args: {beam: {"tok_s": tok_s, "first_run_s": 1.0} for beam in args[-1].split(",")} | {
        "peak_rss_mb": 400.0, "process_s": 9.0, "steal_pct": 0.0}


DECODERS = [("ct2", "int8"), ("hf", "fp32"), ("ct2", "fp32"), ("seqlab", "fp32"), ("seqlab", "int8"),
            ("seqlab", "int8+compile")]
PEAKS = {"fp32": 3e11, "bf16": 1.7e11}  # bf16 slower: seqlab's bf16 decodings left out


def test_tiny_training_runs_a_second_round_in_reverse_order_after_the_decodings(bench, monkeypatch):
    figures = {("train", impl, precision): [train(a), train(b)]
               for precision in ("fp32", "bf16")
               for impl, (a, b) in {"seqlab": (3000, 4000), "torch": (2000, 1500), "hf": (2500, 2600)}.items()}
    figures |= {("decode", impl, precision): [decode(1000.0)] for impl, precision in DECODERS}
    figures[("decode", "ct2", "int8")] = [decode(900.0), decode(1200.0)]
    measure, calls = recording(figures)
    monkeypatch.setattr(bench, "measure", measure)
    results = {"train": {}, "decode": {}}
    bench.measure_all(["tiny"], "train,decode", 4, PEAKS, results, seconds_left=lambda: 1e9)

    kinds = [kind for kind, *_ in calls]
    assert kinds == ["train"] * 6 + ["decode"] * (len(DECODERS) + 1) + ["train"] * 6  # round 2 minutes later
    fp32_order = [impl for kind, impl, size, precision, _ in calls if kind == "train" and precision == "fp32"]
    assert fp32_order == ["seqlab", "torch", "hf", "hf", "torch", "seqlab"]
    assert {steps for kind, *_, steps in calls if kind == "train"} == {"2"}  # --steps 4 shared out
    row = results["train"]["tiny/fp32"]
    assert {impl: r["tok_s"] for impl, r in row.items()} == {"seqlab": 4000, "torch": 2000, "hf": 2600}
    assert row["torch"]["tok_s_runs"] == [2000, 1500]
    assert row["seqlab"]["mfu"] == pytest.approx(1e11 / (4096 / 4000) / 3e11)  # the kept run's own MFU
    assert "train_rounds_left_out" not in results


def test_a_training_round_that_would_pass_the_budget_is_left_out(bench, monkeypatch):
    figures = {("train", impl, precision): [train(1000.0 + i) for i in range(2)]
               for precision in ("fp32", "bf16") for impl in ("seqlab", "torch", "hf")}
    measure, calls = recording(figures)
    monkeypatch.setattr(bench, "measure", measure)
    results = {"train": {}, "decode": {}}
    bench.measure_all(["tiny", "small"], "train", 4, PEAKS, results, seconds_left=lambda: 0.0)
    assert [size for _, _, size, *_ in calls] == ["tiny"] * 6 + ["small"] * 6
    assert results["train_rounds_left_out"] == ["tiny/2"]
    assert results["train"]["tiny/fp32"]["seqlab"]["tok_s"] == 1000.0


def test_small_training_runs_one_round(bench, monkeypatch):
    figures = {("train", impl, precision): [{"tok_s": 500.0, "s_per_step": 8.0, "flops_per_step": 1e12,
                                             "peak_rss_mb": 3000.0}]
               for precision in ("fp32", "bf16") for impl in ("seqlab", "torch", "hf")}
    measure, calls = recording(figures)
    monkeypatch.setattr(bench, "measure", measure)
    results = {"train": {}}
    bench.train_rows("small", 4, {"fp32": 3e11, "bf16": 1.7e11}, results)
    assert len(calls) == 6 and {steps for *_, steps in calls} == {"4"}
    assert "tok_s_runs" not in results["train"]["small/fp32"]["seqlab"]


def test_decoding_measures_ctranslate2_int8_first_and_last_and_keeps_the_faster(bench, monkeypatch):
    figures = {("decode", impl, precision): [decode(1000.0)] for impl, precision in DECODERS}
    figures[("decode", "ct2", "int8")] = [decode(900.0), decode(1200.0)]
    measure, calls = recording(figures)
    monkeypatch.setattr(bench, "measure", measure)
    results = {"decode": {}}
    bench.decode_rows("tiny", results, bf16_pays=False)

    order = [(impl, precision) for _, impl, _, precision, _ in calls]
    assert order[0] == order[-1] == ("ct2", "int8") and len(order) == len(DECODERS) + 1
    for beam in bench.BEAMS:
        reference = results["decode"][f"tiny/beam{beam}"]["ct2 int8"]
        assert reference["tok_s"] == 1200.0 and reference["tok_s_runs"] == [900.0, 1200.0]
        assert results["decode"][f"tiny/beam{beam}"]["seqlab fp32"]["tok_s"] == 1000.0


def test_mfu_is_taken_against_the_faster_peak_of_the_run(bench):
    results = {"train": {"tiny/fp32": {"seqlab": train(4000.0), "hf": {"error": "exit 1"}},
                         "tiny/bf16": {"seqlab": train(2000.0)}}}
    for row in results["train"].values():
        row["seqlab"]["mfu"] = 1.5  # against a peak measured in a slow minute
    bench.mfu_against({"fp32": 3e11, "bf16": 1.6e11}, results)
    assert results["train"]["tiny/fp32"]["seqlab"]["mfu"] == pytest.approx(1e11 / (4096 / 4000) / 3e11)
    assert results["train"]["tiny/bf16"]["seqlab"]["mfu"] == pytest.approx(1e11 / (4096 / 2000) / 1.6e11)
    assert "mfu" not in results["train"]["tiny/fp32"]["hf"]
