"""Experiment 3: BLEU by source length, several models on one test set (Bahdanau et al. 2015, Fig. 2).

Plain encoder-decoders squeeze every source into one context vector and lose long sentences
first; models with attention keep their BLEU as sentences grow. Each model translates the whole
test set once (its checkpoint's decode settings, or ``beam``); the sentences are grouped by
source length in words and sacrebleu scores each group.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from seqlab.analysis.plots import line_panels, write_csv
from seqlab.data.reader import read_parallel
from seqlab.errors import UserError
from seqlab.evaluation import translate_lines
from seqlab.metrics import score_translations
from seqlab.runs import load_model


def bucket_edges(lengths: list[int], width: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi] ranges of ``width`` words that cover the lengths seen."""
    top = max(lengths)
    return [(lo, lo + width - 1) for lo in range(width * (min(lengths) // width), top + 1, width)]


def run_length_buckets(checkpoints: list[Path], src: Path, ref: Path, out: Path, width: int = 10,
                       beam: int | None = None, names: list[str] | None = None, log=print) -> list[dict]:
    if not checkpoints:
        raise UserError("give at least one --ckpt")
    if width < 1:
        raise UserError(f"--width must be at least 1 (got {width})")
    if (out / "experiment.json").exists():
        raise UserError(f"{out} already holds an experiment; choose another --out (nothing was changed)")
    corpus = read_parallel(src, ref)
    if not corpus.src:
        raise UserError(f"{src}: no sentence pairs to score")
    lengths = [len(s.split()) for s in corpus.src]
    edges = bucket_edges(lengths, width)
    names = names or [Path(c).name for c in checkpoints]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, ckpt in zip(names, checkpoints):
        loaded = load_model(ckpt)
        if loaded.codec.task != "translation":
            raise UserError(f"{ckpt}: a {loaded.config.model.kind} model does not translate; "
                            "length buckets compare translation models")
        decode = loaded.config.decode if beam is None else loaded.config.decode.model_copy(update={"beam_size": beam})
        hyps = [h[0][0] if h else "" for h in translate_lines(loaded.model, loaded.codec, corpus.src, decode,
                                                               torch.device("cpu"))]
        (out / f"{name}.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        for lo, hi in edges:
            idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
            if not idx:
                continue
            scores = score_translations([hyps[i] for i in idx], [corpus.tgt[i] for i in idx])
            rows.append({"model": name, "bucket": f"{lo}-{hi}",
                         "mean_length": round(sum(lengths[i] for i in idx) / len(idx), 2), "sentences": len(idx),
                         "bleu": round(scores.bleu, 2), "exact_match": round(scores.exact_match, 2)})
        log(f"{name}: " + ", ".join(f"{r['bucket']}: {r['bleu']:.1f}" for r in rows if r["model"] == name))
    write_csv(out / "length_buckets.csv", rows)
    series = {name: ([r["mean_length"] for r in rows if r["model"] == name], [r["bleu"] for r in rows if r["model"] == name])
              for name in names}
    line_panels(out / "bleu_vs_length.png", {f"{src.name}, {len(corpus.src)} sentences": series},
                f"BLEU by source sentence length (buckets of {width} words)", "source sentence length (words, mean of the bucket)",
                "BLEU", ylim=(-3, 103))
    (out / "experiment.json").write_text(json.dumps({
        "experiment": "length-buckets", "checkpoints": [str(c) for c in checkpoints], "names": names,
        "src": str(src), "ref": str(ref), "width": width, "results": rows}, indent=2) + "\n")
    return rows
