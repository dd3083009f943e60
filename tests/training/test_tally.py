import math

import pytest
import torch

from seqlab.training.tally import StepTally


def step(tally: StepTally, loss: float, targets: int, applied: bool) -> None:
    tally.add(torch.tensor(loss), targets, torch.tensor(applied))


def test_the_window_sums_finite_losses_and_counts_every_target():
    tally = StepTally(torch.device("cpu"))
    step(tally, 6.0, 3, True)
    step(tally, math.inf, 5, False)
    step(tally, math.nan, 2, False)
    step(tally, 2.0, 1, True)
    window = tally.read_window()
    assert (window.loss, window.counted, window.targets) == (8.0, 4, 11)
    assert window.seconds >= 0

    step(tally, 1.5, 7, True)  # a new window
    window = tally.read_window()
    assert (window.loss, window.counted, window.targets) == (1.5, 7, 7)


def test_a_window_of_only_non_finite_losses_counts_no_target():
    tally = StepTally(torch.device("cpu"))
    step(tally, math.nan, 4, False)
    window = tally.read_window()
    assert (window.loss, window.counted, window.targets) == (0.0, 0, 4)


def test_skips_are_counted_since_the_last_read_and_in_a_row_until_an_applied_update():
    tally = StepTally(torch.device("cpu"))
    for applied in (False, False, True, False):
        step(tally, 1.0, 1, applied)
    assert tally.read_skips() == (3, 1)
    assert tally.read_skips() == (0, 1)  # nothing new since; still one in a row
    step(tally, 1.0, 1, False)
    step(tally, 1.0, 1, False)
    assert tally.read_skips() == (2, 3)
    step(tally, 1.0, 1, True)
    assert tally.read_skips() == (0, 0)


def test_a_resumed_run_continues_its_run_of_skips():
    tally = StepTally(torch.device("cpu"), skipped_in_a_row=2)
    step(tally, math.inf, 1, False)
    assert tally.read_skips() == (1, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_steps_are_tallied_without_waiting_for_the_device():
    tally = StepTally(torch.device("cuda"))
    loss, applied = torch.tensor(2.0, device="cuda"), torch.tensor(True, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync in add() raises
    try:
        for _ in range(3):
            tally.add(loss, 5, applied)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    window = tally.read_window()
    assert (window.loss, window.counted, window.targets) == (6.0, 15, 15)
