"""Experiment 1, "the farther, the more forgotten": accuracy against sequence length and position.

For copy and reverse tasks with every sequence exactly L symbols long, it trains a plain tanh
RNN, an LSTM and a GRU encoder-decoder (the context vector is all the decoder gets), an LSTM
with attention, and the Transformer, under one budget (steps and minutes) and with parameter
counts matched to the Transformer's within 10 % (the RNNs' hidden size is chosen to match).
It then decodes each test set greedily and reports

* exact match against L (lecture §01: the context vector holds the last words best, so long
  sequences break plain seq2seq first), and
* token accuracy against the position in the output (which words get lost).

Writes ``results.csv``, ``positions.csv``, ``exact_vs_length.png``, ``accuracy_vs_position.png``
and ``experiment.json`` (the settings and the table) to the output directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from seqlab.analysis.plots import line_panels, write_csv
from seqlab.config import Config, parse_config
from seqlab.data.reader import read_parallel
from seqlab.data.synth import write_synthetic
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.evaluation import evaluate
from seqlab.models import build_model, count_parameters
from seqlab.runs import load_model
from seqlab.training.trainer import train

# The models of the lecture's story; the Transformer is the reference size.
MODELS = {
    "rnn": {"kind": "rnn_seq2seq", "cell": "rnn", "attention": "none"},  # Elman tanh RNN
    "lstm": {"kind": "rnn_seq2seq", "cell": "lstm", "attention": "none"},
    "gru": {"kind": "rnn_seq2seq", "cell": "gru", "attention": "none"},
    "lstm+attention": {"kind": "rnn_seq2seq", "cell": "lstm", "attention": "dot"},  # the lecture's <s_t, h_i>
    "transformer": {"kind": "transformer", "d_model": 128, "n_heads": 4, "n_encoder_layers": 1,
                    "n_decoder_layers": 2, "d_ff": 256, "dropout": 0.0, "layer_norm": "pre"},
}
LABELS = {"rnn": "tanh RNN seq2seq", "lstm": "LSTM seq2seq", "gru": "GRU seq2seq",
          "lstm+attention": "LSTM + attention", "transformer": "Transformer"}
RNN_EMBED = 128
TOLERANCE = 0.10  # parameter counts within ±10 % of the Transformer's


@dataclass
class LongRangeSettings:
    tasks: list[str] = field(default_factory=lambda: ["copy", "reverse"])
    lengths: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80])
    models: list[str] = field(default_factory=lambda: list(MODELS))
    steps: int = 3000  # per run; whichever of steps and minutes comes first stops it
    minutes: float = 1.0
    train_size: int = 10000
    symbols: int = 20  # distinct symbols in the synthetic sequences
    seed: int = 1


def parameters(cfg: Config, vocab_size: int) -> int:
    """Parameter count of the model a config describes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return count_parameters(build_model(cfg.model, vocab_size, vocab_size))


def matched_hidden_size(tree: dict, vocab_size: int, target: int) -> int:
    """The even RNN hidden size whose model's parameter count is closest to ``target``."""
    def count(hidden: int) -> int:
        trial = {**tree, "model": {**tree["model"], "hidden_size": hidden}}
        return parameters(parse_config(trial), vocab_size)

    lo, hi = 2, 4096  # parameter count grows with the hidden size: bisect, then take the closer neighbour
    while hi - lo > 2:
        mid = (lo + hi) // 4 * 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(count(h) - target))


def run_tree(model: dict, data: Path, run_dir: Path, length: int, s: LongRangeSettings) -> dict:
    """The config of one run: the model, its data, and the shared budget and schedule."""
    return {
        "run_dir": str(run_dir),
        "data": {split: {"src": str(data / f"{split}.src"), "tgt": str(data / f"{split}.tgt")}
                 for split in ("train", "dev", "test")} | {"max_len": length + 2},
        "tokenizer": {"type": "word", "vocab_size": s.symbols + 8},
        "model": {**model, "max_positions": 4 * length + 16,
                  **({"embed_dim": RNN_EMBED} if model["kind"] == "rnn_seq2seq" else {})},
        "train": {"seed": s.seed, "max_tokens": 1024, "max_steps": s.steps, "max_minutes": s.minutes, "lr": 3e-3,
                  "warmup_steps": min(200, max(s.steps // 10, 1)), "label_smoothing": 0.1, "clip_norm": 1.0,
                  "valid_every": max(s.steps // 4, 1), "valid_max_sentences": 100, "metric": "bleu",
                  "patience": None, "log_every": 50},
        "decode": {"beam_size": 1, "max_len_ratio": 1.0, "max_len_extra": 5, "batch_size": 100},
    }


def position_accuracy(hypotheses: list[str], references: list[str], length: int) -> list[float]:
    """Share of outputs whose i-th token equals the reference's i-th token, for i = 0 … length − 1."""
    correct = [0] * length
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        for i in range(min(length, len(r))):
            correct[i] += i < len(h) and h[i] == r[i]
    return [100.0 * c / max(len(references), 1) for c in correct]


def run_long_range(s: LongRangeSettings, out: Path, log=print) -> list[dict]:
    """Train every (task, length, model), score the test sets, write the tables and plots; returns the rows."""
    unknown = [m for m in s.models if m not in MODELS]
    if unknown:
        raise UserError(f"--models: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    for task in s.tasks:
        if task not in ("copy", "reverse"):
            raise UserError(f"--tasks: {task!r} is not copy or reverse")
    if any(length < 1 for length in s.lengths):
        raise UserError("--lengths must be positive")
    if (out / "experiment.json").exists():
        raise UserError(f"{out} already holds an experiment; choose another --out (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)

    rows, positions = [], []
    total, done = len(s.tasks) * len(s.lengths) * len(s.models), 0
    for task in s.tasks:
        for length in s.lengths:
            data = out / "data" / f"{task}-{length}"
            write_synthetic(task, data, vocab_size=s.symbols, min_len=length, max_len=length,
                            train_size=s.train_size, dev_size=200, test_size=200, seed=s.seed)
            train_corpus = read_parallel(data / "train.src", data / "train.tgt")
            reference = parse_config(run_tree(MODELS["transformer"], data, out / "tmp", length, s))
            vocab_size = len(Tokenizer.train(train_corpus.src + train_corpus.tgt, reference.tokenizer))
            target = parameters(reference, vocab_size)
            test = read_parallel(data / "test.src", data / "test.tgt")
            for name in s.models:
                tree = run_tree(MODELS[name], data, out / "runs" / f"{task}-{length}-{name}", length, s)
                if MODELS[name]["kind"] == "rnn_seq2seq":
                    tree["model"]["hidden_size"] = matched_hidden_size(tree, vocab_size, target)
                cfg = parse_config(tree)
                n = parameters(cfg, vocab_size)
                if abs(n / target - 1) > TOLERANCE:
                    raise UserError(f"{name}: {n:,} parameters, more than 10% from the Transformer's {target:,}")
                started = time.monotonic()
                result = train(cfg, progress=False)
                seconds = time.monotonic() - started
                loaded = load_model(cfg.run_dir)
                scores = evaluate(loaded.model, loaded.codec, test, cfg.decode, torch.device("cpu"))
                by_position = position_accuracy(scores.hypotheses, test.tgt, length)
                row = {"task": task, "length": length, "model": name, "parameters": n,
                       "hidden_size": tree["model"].get("hidden_size", ""), "steps": result.state.step,
                       "seconds": round(seconds, 1), "exact_match": round(scores.scores.exact_match, 2),
                       "token_accuracy": round(sum(by_position) / length, 2), "bleu": round(scores.scores.bleu, 2)}
                rows.append(row)
                positions += [{"task": task, "length": length, "model": name, "position": i + 1,
                               "accuracy": round(a, 2)} for i, a in enumerate(by_position)]
                done += 1
                log(f"[{done}/{total}] {task} L={length} {name}: {n:,} parameters, {row['steps']} steps in "
                    f"{seconds:.0f} s, exact match {row['exact_match']:.1f}%, token accuracy {row['token_accuracy']:.1f}%")

    write_csv(out / "results.csv", rows)
    write_csv(out / "positions.csv", positions)
    plot_long_range(rows, positions, out, f"; each model ≤ {s.steps:,} steps / {s.minutes:g} min, "
                                          f"parameters matched within 10%")
    (out / "experiment.json").write_text(json.dumps({"experiment": "long-range", "settings": asdict(s),
                                                     "results": rows}, indent=2) + "\n")
    return rows


def plot_long_range(rows: list[dict], positions: list[dict], out: Path, budget: str = "") -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    by_length = {f"{t} task": {LABELS[m]: ([r["length"] for r in rows if r["task"] == t and r["model"] == m],
                                   [r["exact_match"] for r in rows if r["task"] == t and r["model"] == m])
                               for m in models} for t in tasks}
    line_panels(out / "exact_vs_length.png", by_length,
                f"Exact match against sequence length (test set, greedy{budget})",
                "sequence length L (symbols, log scale)", "exact match (% of sequences)", logx=True, ylim=(-3, 103))
    longest = max(r["length"] for r in rows)
    by_position = {f"{t} task, L = {longest}": {
        LABELS[m]: ([p["position"] for p in positions if (p["task"], p["model"], p["length"]) == (t, m, longest)],
            [p["accuracy"] for p in positions if (p["task"], p["model"], p["length"]) == (t, m, longest)])
        for m in models} for t in tasks}
    line_panels(out / "accuracy_vs_position.png", by_position,
                f"Token accuracy against position in the output (test set, greedy{budget})",
                "position in the output (1 = first token written)", "token accuracy (%)", ylim=(-3, 103))


def format_table(rows: list[dict]) -> str:
    """Exact match per (task, length) row and model column, as fixed-width text."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [f"{'task':<8} {'L':>4}  " + "  ".join(f"{LABELS[m]:>16}" for m in models)]
    for key in dict.fromkeys((r["task"], r["length"]) for r in rows):
        cells = {r["model"]: r for r in rows if (r["task"], r["length"]) == key}
        lines.append(f"{key[0]:<8} {key[1]:>4}  " + "  ".join(f"{cells[m]['exact_match']:>15.1f}%" for m in models))
    params = {r["model"]: r["parameters"] for r in rows}
    lines.append(f"{'params':<8} {'':>4}  " + "  ".join(f"{params[m]:>16,}" for m in models))
    return "\n".join(lines)
