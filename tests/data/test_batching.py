import random

import torch

from seqlab.config import TokenizerConfig
from seqlab.data.batching import Example, batch_indices, collate, encode_pairs, make_batches, padding_ratio
from seqlab.data.reader import ParallelCorpus
from seqlab.data.tokenizer import BOS, EOS, PAD, Tokenizer


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
    assert batch.n_tgt_tokens == 3 + 5
    assert batch.tgt_in.dtype == torch.long


def test_length_filter_is_counted_with_the_first_line():
    tok = Tokenizer.train(["a b c d e f"] * 10, TokenizerConfig(type="word", vocab_size=12))
    corpus = ParallelCorpus(["a b", "a b c d e f", "c", "a b c d"], ["b a", "f e", "c", "d c b a"], [1, 2, 5, 7])
    examples, report = encode_pairs(corpus, tok, tok, max_len=3)
    assert [e.index for e in examples] == [0, 2]
    assert report.too_long == 2 and report.first_too_long_line == 2 and report.pairs == 2


def test_padding_ratio():
    batches = make_batches([Example(i, [4] * n, [4] * n) for i, n in enumerate([3, 3, 9])], 1000, shuffle=False)
    assert 0.0 < padding_ratio(batches) < 1.0
