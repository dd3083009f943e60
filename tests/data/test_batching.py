import random

import pytest
import torch

from seqlab.data.batching import Example, batch_indices, collate, make_batches, padding_ratio
from seqlab.data.tokenizer import BOS, EOS, PAD


def test_every_example_once_and_within_the_token_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)] + [300]  # one longer than the budget
    batches = batch_indices(lengths, max_tokens=256, shuffle=True, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 256 or len(b) == 1


def test_seeded_order_and_bucketing():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    a = batch_indices(lengths, 512, shuffle=True, seed=1)
    assert a == batch_indices(lengths, 512, shuffle=True, seed=1)
    assert a != batch_indices(lengths, 512, shuffle=True, seed=2)
    # Bucketing: within a batch the lengths are close, so padding stays low.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in a)
    assert sum(lengths) / padded > 0.9


def test_collate_teacher_forcing_layout():
    batch = collate([Example(0, [5, 6, 7], [8, 9]), Example(1, [5], [8, 9, 10, 11])])
    assert batch.src.tolist() == [[5, 6, 7, EOS], [5, EOS, PAD, PAD]]
    assert batch.tgt_in.tolist() == [[BOS, 8, 9, PAD, PAD], [BOS, 8, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS, PAD, PAD], [8, 9, 10, 11, EOS]]
    assert batch.n_targets == 3 + 5
    assert batch.tgt_in.dtype == torch.long


def test_vector_sources_lm_targets_and_labels():
    vectors = collate([Example(0, torch.tensor([1.0, 0.0]), [8, 9]), Example(1, torch.tensor([0.0, 1.0]), [8])])
    assert vectors.src.shape == (2, 2) and vectors.src.dtype == torch.float32
    assert vectors.tgt_out.tolist() == [[8, 9, EOS], [8, EOS, PAD]]
    lm = collate([Example(0, None, [5, 6])])
    assert lm.src is None and lm.tgt_in.tolist() == [[BOS, 5, 6]]
    classes = collate([Example(0, [5, 6], 1), Example(1, [7], 0)])
    assert classes.labels.tolist() == [1, 0] and classes.labels.dtype == torch.long and classes.n_targets == 2
    assert classes.tgt_in is None and classes.src.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    scores = collate([Example(0, [5], 0.5)])
    assert scores.labels.dtype == torch.float32


def test_padding_ratio():
    examples = [Example(i, [4] * n, [4] * n) for i, n in enumerate([3, 3, 9])]
    batches = make_batches(examples, 1000, shuffle=False)
    assert 0.0 < padding_ratio(examples, [b.indices for b in batches]) < 1.0
    total = sum(b.tgt_out.numel() for b in batches)  # the same share counted on the collated tensors
    expected = 1.0 - sum(b.n_targets for b in batches) / total
    assert padding_ratio(examples, [b.indices for b in batches]) == pytest.approx(expected)
