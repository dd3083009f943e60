"""Plain seq2seq vs seq2seq + attention vs the Transformer on the reverse task, side by side.

The lecture's claim in one table: an encoder-decoder RNN that passes only its last state (the
context vector) forgets the far end of a long source, attention lets the decoder look at every
source word, and the Transformer does without the recurrence. The three models get the same
data, tokenizer, training loop, budget (steps and minutes) and, within 10 %, the same number of
parameters: the RNNs' hidden size is chosen to match the Transformer of configs/reverse.yaml.

    python examples/compare_reverse.py [--minutes 3] [--max-steps 20000] [--out runs/compare-reverse]

Prints parameters, steps, minutes, test exact match, BLEU and PPL for each, and writes
OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from seqlab.analysis.long_range import matched_hidden_size, parameters
from seqlab.config import apply_overrides, load_config
from seqlab.data.reader import read_parallel
from seqlab.data.synth import write_synthetic
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.evaluation import evaluate
from seqlab.runs import load_model
from seqlab.training.trainer import train

MODELS = {  # name: (config, what it shows)
    "seq2seq (LSTM, no attention)": "configs/reverse_rnn.yaml",
    "seq2seq + dot attention (LSTM)": "configs/reverse_attention.yaml",
    "Transformer": "configs/reverse.yaml",
}


def config_tree(path: str, overrides: list[str]) -> dict:
    return apply_overrides(yaml.safe_load(Path(path).read_text(encoding="utf-8")), overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/reverse", help="reverse task directory (made if missing)")
    parser.add_argument("--out", default="runs/compare-reverse", help="directory for the three runs")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    parser.add_argument("--max-steps", type=int, default=20000, help="step budget per model")
    parser.add_argument("--beam", type=int, default=1, help="beam size for the test set (1 = greedy)")
    args = parser.parse_args()

    data, out = Path(args.data), Path(args.out)
    if out.exists():
        raise UserError(f"{out} exists: remove it or pass another --out")
    if not (data / "train.src").exists():
        write_synthetic("reverse", data, vocab_size=30, min_len=10, max_len=30)
    common = [f"data.train.src={data}/train.src", f"data.train.tgt={data}/train.tgt",
              f"data.dev.src={data}/dev.src", f"data.dev.tgt={data}/dev.tgt",
              f"data.test.src={data}/test.src", f"data.test.tgt={data}/test.tgt",
              f"train.max_minutes={args.minutes}", f"train.max_steps={args.max_steps}"]

    reference = load_config(MODELS["Transformer"], common)
    corpus = read_parallel(data / "train.src", data / "train.tgt")
    vocab_size = len(Tokenizer.train(corpus.src + corpus.tgt, reference.tokenizer))  # what every run will train
    target = parameters(reference, vocab_size)

    rows = []
    for name, path in MODELS.items():
        overrides = common + [f"run_dir={out / Path(path).stem}"]
        if load_config(path, overrides).model.kind == "rnn_seq2seq":
            hidden = matched_hidden_size(config_tree(path, overrides), vocab_size, target)
            overrides.append(f"model.hidden_size={hidden}")
        cfg = load_config(path, overrides)
        n = parameters(cfg, vocab_size)
        print(f"== {name}: {n:,} parameters ({100 * (n / target - 1):+.1f}% vs the Transformer)", file=sys.stderr)
        started = time.monotonic()
        result = train(cfg, progress=sys.stderr.isatty())
        minutes = (time.monotonic() - started) / 60
        loaded = load_model(cfg.run_dir)
        test = read_parallel(data / "test.src", data / "test.tgt")
        scores = evaluate(loaded.model, loaded.codec, test, cfg.decode, torch.device("cpu"), beam_size=args.beam)
        rows.append({"model": name, "config": path, "parameters": n, "steps": result.state.step,
                     "minutes": round(minutes, 2), "exact_match": scores.scores.exact_match,
                     "bleu": scores.scores.bleu, "ppl": scores.ppl,
                     "hidden_size": getattr(cfg.model, "hidden_size", None)})

    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nReverse task, lengths 10-30, 30 symbols; test set of {len(test.src)}; "
          f"{'greedy' if args.beam == 1 else f'beam {args.beam}'}; budget {args.minutes} min / {args.max_steps} steps each")
    print(f"{'model':<34} {'params':>9} {'steps':>7} {'min':>5} {'exact %':>8} {'BLEU':>7} {'PPL':>7}")
    for r in rows:
        print(f"{r['model']:<34} {r['parameters']:>9,} {r['steps']:>7,} {r['minutes']:>5.1f} "
              f"{r['exact_match']:>8.1f} {r['bleu']:>7.2f} {r['ppl']:>7.3f}")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"compare_reverse: error: {err}")
