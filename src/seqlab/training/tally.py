"""What the steps between two reads add up to, summed where the steps run.

A step's loss, its target count and whether its update was applied are tensors on the device.
Reading one (``.item()``, ``bool()``, ``int()``) makes the host wait until the device has
finished the step, and on a GPU that wait leaves the device idle while the host collates the
next batch. So the training loop adds them up on the device and reads the sums only when it
logs or saves a checkpoint: one wait per log interval instead of one per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Window:
    """The steps since the last log line, read back on the host."""

    loss: float  # the summed loss of the targets whose batch loss was finite
    counted: int  # those targets
    targets: int  # every target processed, counted or not (for tokens/s)
    seconds: float


class StepTally:
    """Sums kept on the device between reads: the log window's loss and targets, the updates
    skipped since the last check, and how many were skipped in a row (0 after an applied one)."""

    def __init__(self, device: torch.device, skipped_in_a_row: int = 0):
        self.loss = torch.zeros((), device=device)  # finite losses only: a non-finite loss counts for nothing
        self.counted = torch.zeros((), dtype=torch.long, device=device)  # targets in self.loss
        self.targets = 0  # a host int: batches are collated on the host, their target counts known there
        self.started = time.monotonic()
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.in_a_row = torch.full((), skipped_in_a_row, dtype=torch.long, device=device)

    def add(self, loss_sum: torch.Tensor, targets: int, applied: torch.Tensor) -> None:
        """One step: its summed loss (0-d), its targets, and whether its update was applied (0-d bool)."""
        finite = torch.isfinite(loss_sum)
        self.loss += torch.where(finite, loss_sum, 0.0)
        self.counted += finite * targets
        self.targets += targets
        self.skipped += ~applied
        self.in_a_row.add_(1).mul_(~applied)  # back to 0 at an applied update

    def read_skips(self) -> tuple[int, int]:
        """(updates skipped since the last read, skipped in a row now); waits for the device."""
        skipped, in_a_row = int(self.skipped), int(self.in_a_row)
        self.skipped.zero_()
        return skipped, in_a_row

    def read_window(self) -> Window:
        """The log window's sums (waits for the device), and a new window started."""
        window = Window(self.loss.item(), int(self.counted), self.targets, time.monotonic() - self.started)
        self.loss.zero_()
        self.counted.zero_()
        self.targets, self.started = 0, time.monotonic()
        return window
