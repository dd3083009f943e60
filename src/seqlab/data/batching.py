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

from seqlab.data.tokenizer import BOS, EOS, PAD


@dataclass
class Example:
    index: int  # position in the corpus (restores input order after length-sorted decoding)
    src: list[int] | torch.Tensor | None  # token ids, an input vector (D,), or None for a language model
    tgt: list[int] | int | float  # token ids, or a classifier's class index / regression target


@dataclass
class Batch:
    src: torch.Tensor | None  # (B, S) source ids + <eos>, right-padded; (B, D) vectors; None for LMs
    tgt_in: torch.Tensor | None  # (B, T) <bos> + target: the decoder input under teacher forcing
    tgt_out: torch.Tensor | None  # (B, T) target + <eos>: what each position must predict
    indices: list[int]
    n_targets: int  # what the loss is averaged over: real (non-<pad>) tokens in tgt_out, or examples
    labels: torch.Tensor | None = None  # (B,) class indices (long) or scores (float), many-to-one only

    def to(self, device: torch.device | str) -> "Batch":
        """The batch on ``device``. To a GPU the tensors go through pinned memory: to stage a copy
        from pageable memory the driver may wait for the stream's queued work (CUDA's "API
        synchronization behavior"), a host sync per step; a copy from pinned memory is queued
        behind that work (the caching host allocator keeps each buffer until its copy is done)."""
        pin = torch.device(device).type == "cuda"
        move = lambda t: None if t is None else (t.pin_memory() if pin else t).to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.src), move(self.tgt_in), move(self.tgt_out), self.indices, self.n_targets,
                     move(self.labels))


def pad_to_tensor(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(examples: list[Example]) -> Batch:
    """Teacher forcing: the decoder reads <bos> y_1 … y_n and must predict y_1 … y_n <eos>.

    Sources are padded id sequences ending in <eos>, stacked vectors, or absent; targets are
    token sequences, or one label per example (many-to-one).
    """
    first = examples[0]
    if first.src is None:
        src = None
    elif torch.is_tensor(first.src):
        src = torch.stack([e.src for e in examples])  # (B, D)
    else:
        src = pad_to_tensor([e.src + [EOS] for e in examples])  # (B, S)
    indices = [e.index for e in examples]
    if not isinstance(first.tgt, list):
        dtype = torch.float32 if isinstance(first.tgt, float) else torch.long
        return Batch(src, None, None, indices, len(examples), torch.tensor([e.tgt for e in examples], dtype=dtype))
    return Batch(
        src=src,
        tgt_in=pad_to_tensor([[BOS] + e.tgt for e in examples]),
        tgt_out=pad_to_tensor([e.tgt + [EOS] for e in examples]),
        indices=indices,
        n_targets=count_targets(examples),
    )


def count_targets(examples: list[Example]) -> int:
    """What a batch's loss is averaged over: target tokens + <eos> each, or one per labelled example."""
    return sum(len(e.tgt) + 1 if isinstance(e.tgt, list) else 1 for e in examples)


def example_length(e: Example) -> int:
    """Padded positions the example needs: its longer side, + 1 for <eos> / <bos>."""
    sides = [len(x) for x in (e.src, e.tgt) if isinstance(x, list)]
    return max(sides, default=0) + 1


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
    lengths = [example_length(e) for e in examples]
    return [collate([examples[i] for i in idx]) for idx in batch_indices(lengths, max_tokens, shuffle, seed)]


def padding_ratio(examples: list[Example], batches: list[list[int]]) -> float:
    """Share of <pad> among the target positions of ``batches`` (index lists, as from
    :func:`batch_indices`): what length bucketing keeps low."""
    real = padded = 0
    for b in batches:
        targets = [count_targets([examples[i]]) for i in b]
        real += sum(targets)
        padded += len(b) * max(targets)
    return 1.0 - real / max(padded, 1)
