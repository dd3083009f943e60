import pytest

from seqlab.data.reader import read_parallel
from seqlab.data.synth import symbols, write_synthetic
from seqlab.errors import UserError


@pytest.mark.parametrize("task", ["reverse", "copy", "sort"])
def test_targets_follow_the_task(tmp_path, task):
    sizes = write_synthetic(task, tmp_path, vocab_size=12, min_len=2, max_len=9, train_size=50, dev_size=5,
                            test_size=7, seed=4)
    assert sizes == {"train": 50, "dev": 5, "test": 7}
    rank = {s: i for i, s in enumerate(symbols(12))}
    corpus = read_parallel(tmp_path / "train.src", tmp_path / "train.tgt")
    assert len(corpus.src) == 50
    for s, t in zip(corpus.src, corpus.tgt):
        s, t = s.split(), t.split()
        assert 2 <= len(s) <= 9 and set(s) <= set(rank)
        expected = {"reverse": s[::-1], "copy": s, "sort": sorted(s, key=rank.get)}[task]
        assert t == expected


def test_seed_makes_it_reproducible(tmp_path):
    write_synthetic("copy", tmp_path / "a", train_size=20, seed=7)
    write_synthetic("copy", tmp_path / "b", train_size=20, seed=7)
    write_synthetic("copy", tmp_path / "c", train_size=20, seed=8)
    a, b, c = ((tmp_path / d / "train.src").read_text() for d in "abc")
    assert a == b and a != c


def test_symbols_are_distinct_single_words():
    syms = symbols(100)
    assert len(set(syms)) == 100 and all(" " not in s for s in syms)


@pytest.mark.parametrize("kw, msg", [({"task": "shuffle"}, "unknown task"), ({"min_len": 5, "max_len": 3}, "--min-len"),
                                     ({"vocab_size": 0}, "--vocab-size")])
def test_bad_arguments(tmp_path, kw, msg):
    args = {"task": "reverse", **kw}
    with pytest.raises(UserError, match=msg):
        write_synthetic(args.pop("task"), tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
