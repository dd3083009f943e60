import pytest

from seqlab.training.schedule import inverse_sqrt_lr, learning_rate


def test_equals_the_papers_formula():
    d, warmup = 512, 4000
    peak = d**-0.5 * warmup**-0.5
    for step in [1, 10, 1000, 4000, 4001, 20000, 100000]:
        paper = d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert inverse_sqrt_lr(step, peak, warmup) == pytest.approx(paper, rel=1e-12)


def test_warm_up_then_decay():
    lrs = [inverse_sqrt_lr(s, 1e-3, 100) for s in range(1, 1000)]
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 99
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100]))
    assert all(a > b for a, b in zip(lrs[100:], lrs[101:]))
    assert inverse_sqrt_lr(400, 1e-3, 100) == pytest.approx(0.5e-3)


def test_constant():
    assert learning_rate(5, "constant", 0.1, 100) == 0.1
