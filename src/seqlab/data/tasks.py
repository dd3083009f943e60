"""What each model kind reads and writes: raw lines in, model inputs out, and back.

Four tasks cover the six model kinds (``TASK_OF``):

* ``translation`` (transformer, rnn_seq2seq): line-aligned source/target text;
* ``vector``      (vector_to_seq): a line of numbers → target text;
* ``lm``          (gpt, rnn_lm): plain text, one example per line;
* ``classify``    (classifier): ``label<TAB>text`` lines; the label is a class, or a number to regress.

:class:`Codec` holds what turns text into ids (the tokenizers, the label set) and is saved with
the model, so training, evaluation and inference encode the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.data.batching import Example
from seqlab.data.reader import CorpusReport, ParallelCorpus, read_labeled, read_parallel, read_text
from seqlab.errors import UserError

TASK_OF = {"transformer": "translation", "rnn_seq2seq": "translation", "vector_to_seq": "vector",
           "gpt": "lm", "rnn_lm": "lm", "classifier": "classify"}


def read_split(kind: str, files) -> ParallelCorpus:
    """Read one split (``data.train``, ``data.dev``, …) in the layout ``kind`` expects."""
    task = TASK_OF[kind]
    if task == "lm":
        return read_text(files.text)
    if task == "classify":
        return read_labeled(files.text)
    return read_parallel(files.src, files.tgt)


def parse_vector(line: str, dim: int, where: str) -> torch.Tensor:
    """A line of ``dim`` whitespace-separated numbers → a float tensor (D,)."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise UserError(f"{where}: expected {dim} numbers separated by spaces, got {line[:60]!r}") from None
    if len(values) != dim or not all(math.isfinite(v) for v in values):
        raise UserError(f"{where}: expected {dim} finite numbers (model.input_dim), got {len(values)}: {line[:60]!r}")
    return torch.tensor(values)


@dataclass
class Codec:
    """Text ↔ model inputs and outputs for one model kind."""

    kind: str
    src_tok: object  # Tokenizer | ByteTokenizer (the text tokenizer for lm, classify and vector kinds too)
    tgt_tok: object
    labels: list[str] | None = None  # classifier classes, in output order; None when regressing a number
    input_dim: int | None = None  # vector_to_seq: numbers per source line

    @property
    def task(self) -> str:
        return TASK_OF[self.kind]

    @property
    def n_outputs(self) -> int:
        """Size of the model's output layer: target vocabulary, or number of classes."""
        if self.task == "classify":
            return len(self.labels) if self.labels is not None else 1
        return len(self.tgt_tok)

    def source(self, line: str, where: str = "input"):
        """One source line → token ids, a vector, or None (language models have no source)."""
        if self.task == "lm":
            return None
        if self.task == "vector":
            return parse_vector(line, self.input_dim, where)
        return self.src_tok.encode(line)

    def target(self, text: str, where: str):
        """One target → token ids, a class index, or a float."""
        if self.task != "classify":
            return self.tgt_tok.encode(text)
        if self.labels is None:
            try:
                return float(text)
            except ValueError:
                raise UserError(f"{where}: label {text!r} is not a number (model.objective: regress)") from None
        if text not in self.label_index:
            raise UserError(f"{where}: label {text!r} was not seen in training (labels: {', '.join(self.labels)})")
        return self.label_index[text]

    @property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    def encode(self, corpus: ParallelCorpus, name: str | Path, max_len: int | None = None
               ) -> tuple[list[Example], CorpusReport]:
        """Raw pairs → examples; pairs with a side over ``max_len`` tokens are dropped and counted."""
        report = CorpusReport(**vars(corpus.report))
        examples = []
        for i, (s, t, line) in enumerate(zip(corpus.src, corpus.tgt, corpus.line_numbers)):
            where = f"{name}:{line}"
            src, tgt = self.source(s, where), self.target(t, where)
            too_long = any(isinstance(x, list) and len(x) > max_len for x in (src, tgt)) if max_len else False
            if too_long:
                report.too_long += 1
                report.first_too_long_line = report.first_too_long_line or line
                continue
            examples.append(Example(i, src, tgt))
        report.pairs = len(examples)
        return examples, report

    def hypothesis_text(self, ids: list[int]) -> str:
        return self.tgt_tok.decode(ids)

    def prediction_text(self, output: torch.Tensor) -> str:
        """A classifier's output for one example → its label (or the regressed number)."""
        if self.labels is None:
            return f"{float(output):.4g}"
        return self.labels[int(output.argmax())]
