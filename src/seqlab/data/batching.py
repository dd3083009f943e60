"""From token ids to padded tensors, in batches built by token count with length bucketing.

A batch holds as many sentence pairs as fit in ``max_tokens`` *padded* tokens (batch size ×
longest sequence), like fairseq's ``--max-tokens``. Sorting by length before cutting batches
keeps sentences of similar length together, so little of each batch is <pad>; shuffling the
order of the batches (and the tie-breaking within a length) keeps training stochastic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from seqlab.data.reader import CorpusReport, ParallelCorpus
from seqlab.data.tokenizer import BOS, EOS, PAD, Tokenizer


@dataclass
class Example:
    index: int  # position in the corpus (restores input order after length-sorted decoding)
    src: list[int]
    tgt: list[int]


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids + <eos>, right-padded
    tgt_in: torch.Tensor  # (B, T) <bos> + target: the decoder input under teacher forcing
    tgt_out: torch.Tensor  # (B, T) target + <eos>: what each position must predict
    indices: list[int]
    n_tgt_tokens: int  # real (non-<pad>) tokens in tgt_out

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.tgt_in.to(device, non_blocking=True),
                     self.tgt_out.to(device, non_blocking=True), self.indices, self.n_tgt_tokens)


def encode_pairs(
    corpus: ParallelCorpus, src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int | None = None
) -> tuple[list[Example], CorpusReport]:
    """Segment both sides; pairs with a side over ``max_len`` tokens are dropped and counted."""
    src_ids, tgt_ids = src_tok.encode_batch(corpus.src), tgt_tok.encode_batch(corpus.tgt)
    report = CorpusReport(**vars(corpus.report))
    examples = []
    for i, (s, t, line) in enumerate(zip(src_ids, tgt_ids, corpus.line_numbers)):
        if max_len is not None and (len(s) > max_len or len(t) > max_len):
            report.too_long += 1
            report.first_too_long_line = report.first_too_long_line or line
            continue
        examples.append(Example(i, s, t))
    report.pairs = len(examples)
    return examples, report


def pad_to_tensor(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(examples: list[Example]) -> Batch:
    """Teacher forcing: the decoder reads <bos> y_1 … y_n and must predict y_1 … y_n <eos>."""
    return Batch(
        src=pad_to_tensor([e.src + [EOS] for e in examples]),
        tgt_in=pad_to_tensor([[BOS] + e.tgt for e in examples]),
        tgt_out=pad_to_tensor([e.tgt + [EOS] for e in examples]),
        indices=[e.index for e in examples],
        n_tgt_tokens=sum(len(e.tgt) + 1 for e in examples),
    )


def batch_indices(lengths: list[int], max_tokens: int, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Cut example indices into batches of at most ``max_tokens`` padded tokens.

    ``lengths[i]`` is the padded length example i needs (its longer side). Examples are sorted
    by length (ties broken at random when shuffling); an example longer than ``max_tokens`` on
    its own gets a batch of its own rather than being lost. With ``shuffle`` the batch order is
    a seeded permutation, so the same seed gives the same stream.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: shuffled order breaks ties
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def make_batches(examples: list[Example], max_tokens: int, shuffle: bool, seed: int = 0) -> list[Batch]:
    lengths = [max(len(e.src), len(e.tgt)) + 1 for e in examples]  # +1: <eos> / <bos>
    return [collate([examples[i] for i in idx]) for idx in batch_indices(lengths, max_tokens, shuffle, seed)]


def padding_ratio(batches: list[Batch]) -> float:
    """Share of <pad> among all target positions: what length bucketing keeps low."""
    total = sum(b.tgt_out.numel() for b in batches)
    return 1.0 - sum(b.n_tgt_tokens for b in batches) / max(total, 1)
