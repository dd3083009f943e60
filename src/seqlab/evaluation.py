"""One evaluation path for every model: teacher-forced loss and perplexity, then what the task scores.

* sequence outputs (translation, vector_to_seq): PPL, then decoding and BLEU / chrF / exact match;
* language models: PPL (lecture §02.2: the exponential of the cross-entropy);
* classifiers: accuracy (classes) or mean squared error (scores).

Used by validation during training and by ``seqlab evaluate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from seqlab.config import DecodeConfig
from seqlab.data.batching import Example, collate, make_batches
from seqlab.data.reader import ParallelCorpus
from seqlab.data.tasks import Codec
from seqlab.decoding.search import Hypothesis, search
from seqlab.hardware import autocast
from seqlab.metrics import TranslationScores, perplexity, score_translations
from seqlab.training.loss import batch_loss


@torch.no_grad()
def corpus_loss(model, examples: list[Example], max_tokens: int, device: torch.device) -> tuple[float, int]:
    """Σ loss over every reference token (and <eos>), or every example for classifiers, and the count."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in make_batches(examples, max_tokens, shuffle=False):
        total += batch_loss(model, batch.to(device))
        count += batch.n_targets
    return float(total), count


@torch.no_grad()
def translate_ids(model, sources: list, decode: DecodeConfig, device: torch.device,
                  nbest: int = 1, beam_size: int | None = None) -> list[list[Hypothesis]]:
    """Decode sources (id lists or vectors) in length-sorted batches; results come back in input order."""
    model.eval()
    beam = decode.beam_size if beam_size is None else beam_size
    limit = model.max_positions - 1  # room for <eos>
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    for start in range(0, len(order), decode.batch_size):
        idx = order[start : start + decode.batch_size]
        src = collate([Example(i, sources[i] if torch.is_tensor(sources[i]) else sources[i][:limit], [])
                       for i in idx]).src.to(device)
        hyps = search(model, src, beam, decode.length_penalty, decode.max_len_ratio, decode.max_len_extra, nbest)
        for i, h in zip(idx, hyps):
            results[i] = h
    return results


@torch.no_grad()
def classify(model, sources: list[list[int]], device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """A many-to-one model's outputs for each source, in input order: (N, n_classes) or (N,)."""
    model.eval()
    limit = model.max_positions - 1
    outputs = []
    for start in range(0, len(sources), batch_size):
        batch = collate([Example(i, s[:limit], 0) for i, s in enumerate(sources[start : start + batch_size])])
        outputs.append(model(batch.src.to(device)).float().cpu())
    return torch.cat(outputs)


def translate_lines(model, codec: Codec, lines: list[str], decode: DecodeConfig, device: torch.device,
                    nbest: int = 1, beam_size: int | None = None,
                    precision: str = "fp32") -> list[list[tuple[str, float]]]:
    """Plain text in, n-best lists (text, score) out, one list per input line.

    For a classifier the one "hypothesis" is the predicted label (or score) and its score is the
    class probability (0 for a regressed number).
    """
    sources = [codec.source(line, f"input line {i + 1}") for i, line in enumerate(lines)]
    device = torch.device(device)
    if codec.task == "classify":
        with autocast(device, "bf16" if precision == "bf16" else "fp32"):
            out = classify(model, sources, device, decode.batch_size)
        prob = out.softmax(-1).max(-1).values if codec.labels is not None else torch.zeros(len(out))
        return [[(codec.prediction_text(o), float(p))] for o, p in zip(out, prob)]
    with autocast(device, "bf16" if precision == "bf16" else "fp32"):
        hyps = translate_ids(model, sources, decode, device, nbest, beam_size)
    return [[(codec.hypothesis_text(h.tokens), h.score) for h in hs] for hs in hyps]


@dataclass
class EvaluationResult:
    loss: float  # mean per-token cross-entropy (nats), or per-example CE / squared error for classifiers
    n_targets: int
    ppl: float | None = None  # sequence outputs only
    scores: TranslationScores | None = None  # BLEU, chrF, exact match: decoded sequence outputs only
    accuracy: float | None = None  # % correct: classifiers only
    hypotheses: list[str] | None = None
    seconds: float | None = None  # wall-clock time of the decoding (classifying; for LMs, scoring) pass

    def metric(self, name: str) -> float:
        return {"bleu": lambda: self.scores.bleu, "accuracy": lambda: self.accuracy, "loss": lambda: self.loss}[name]()

    def summary(self) -> str:
        parts = [f"loss {self.loss:.4f}"]
        if self.ppl is not None:
            parts.append(f"PPL {self.ppl:.3f}")
        if self.scores is not None:
            s = self.scores
            parts += [f"BLEU {s.bleu:.2f}", f"chrF {s.chrf:.2f}", f"exact {s.exact_match:.1f}%"]
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.1f}%")
        return " | ".join(parts)


def evaluate(model, codec: Codec, corpus: ParallelCorpus, decode: DecodeConfig, device: torch.device,
             max_tokens: int = 4096, beam_size: int | None = None, name: str = "eval",
             precision: str = "fp32") -> EvaluationResult:
    """Loss (and PPL) of the references under teacher forcing, then the task's scores."""
    limit = model.max_positions - 1
    examples, _ = codec.encode(corpus, name)
    for e in examples:  # evaluate every pair: truncate rather than drop what the model cannot hold
        e.src = e.src[:limit] if isinstance(e.src, list) else e.src
        e.tgt = e.tgt[: limit - 1] if isinstance(e.tgt, list) else e.tgt
    start = time.perf_counter()
    total, n = corpus_loss(model, examples, max_tokens, device)
    loss = total / max(n, 1)
    if codec.task == "lm":
        return EvaluationResult(loss, n, ppl=perplexity(total, n), seconds=time.perf_counter() - start)
    start = time.perf_counter()
    if codec.task == "classify":
        out = classify(model, [e.src for e in examples], device, decode.batch_size)
        accuracy = None
        if codec.labels is not None:
            gold = torch.tensor([e.tgt for e in examples])
            accuracy = 100.0 * int((out.argmax(-1) == gold).sum()) / max(len(gold), 1)  # exact, not a float32 mean
        return EvaluationResult(loss, n, accuracy=accuracy, hypotheses=[codec.prediction_text(o) for o in out],
                                seconds=time.perf_counter() - start)
    hyps = [h[0][0] if h else "" for h in translate_lines(model, codec, corpus.src, decode, device,
                                                           beam_size=beam_size, precision=precision)]
    seconds = time.perf_counter() - start
    return EvaluationResult(loss, n, ppl=perplexity(total, n), scores=score_translations(hyps, corpus.tgt),
                            hypotheses=hyps, seconds=seconds)


def precision_table(results: dict[str, EvaluationResult], n_inputs: int) -> str:
    """Each precision's scores beside the first's (fp32), and how long its decoding took.

    BLEU, chrF and exact match for sequence outputs, accuracy for classifiers, PPL for language
    models; "vs fp32" is the difference in the headline score.
    """
    def row(cells: list[str]) -> str:
        return "  ".join(f"{c:>10}" if i else f"{c:<10}" for i, c in enumerate(cells))

    reference = next(iter(results.values()))
    first = next(iter(results))
    if reference.scores is not None:
        header = ["precision", "BLEU", f"vs {first}", "chrF", "exact", "PPL", "decoding", "sent/s"]
        headline = lambda r: r.scores.bleu  # noqa: E731
        cells = lambda r: [f"{r.scores.chrf:.2f}", f"{r.scores.exact_match:.2f}%", f"{r.ppl:.3f}"]  # noqa: E731
    elif reference.accuracy is not None:
        header = ["precision", "accuracy", f"vs {first}", "loss", "classifying", "ex/s"]
        headline, cells = (lambda r: r.accuracy), (lambda r: [f"{r.loss:.4f}"])
    elif reference.ppl is None:  # regression: mean squared error
        header = ["precision", "MSE", f"vs {first}", "scoring", "ex/s"]
        headline, cells = (lambda r: r.loss), (lambda r: [])
    else:
        header = ["precision", "PPL", f"vs {first}", "scoring", "tok/s"]
        headline, cells = (lambda r: r.ppl), (lambda r: [])
    digits = {"PPL": 3, "MSE": 4}.get(header[1], 2)
    lines = [row(header)]
    for precision, r in results.items():
        difference = "" if r is reference else f"{headline(r) - headline(reference):+.{digits}f}"
        count = r.n_targets if header[-1] == "tok/s" else n_inputs
        lines.append(row([precision, f"{headline(r):.{digits}f}", difference, *cells(r), f"{r.seconds:.2f} s",
                          f"{count / max(r.seconds, 1e-9):,.0f}"]))
    return "\n".join(lines)


def merge_results(parts: list[tuple[list[int], EvaluationResult]], corpus: ParallelCorpus, task: str
                  ) -> EvaluationResult:
    """One result from shards of ``corpus`` evaluated apart (each: its indices into ``corpus``, its result).

    Losses are summed over targets before dividing, and BLEU / accuracy are computed once over
    the whole set in corpus order, so the merged result equals evaluating the corpus in one piece.
    """
    n = sum(result.n_targets for _, result in parts)
    total = sum(result.loss * result.n_targets for _, result in parts)
    if task == "lm":
        return EvaluationResult(total / max(n, 1), n, ppl=perplexity(total, n))
    hypotheses = [""] * len(corpus.tgt)
    for indices, result in parts:
        for i, hypothesis in zip(indices, result.hypotheses or []):
            hypotheses[i] = hypothesis
    if task == "classify":
        has_classes = any(result.accuracy is not None for _, result in parts)
        accuracy = 100.0 * sum(h == t for h, t in zip(hypotheses, corpus.tgt)) / max(len(hypotheses), 1)
        return EvaluationResult(total / max(n, 1), n, accuracy=accuracy if has_classes else None,
                                hypotheses=hypotheses)
    return EvaluationResult(total / max(n, 1), n, ppl=perplexity(total, n),
                            scores=score_translations(hypotheses, corpus.tgt), hypotheses=hypotheses)
