"""The learning-rate schedule of "Attention Is All You Need" (§5.3, eq. 3)."""

from __future__ import annotations


def inverse_sqrt_lr(step: int, peak_lr: float, warmup_steps: int) -> float:
    """lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), rescaled to peak at ``peak_lr``.

    Linear warm-up for ``warmup_steps`` steps, then decay with the inverse square root of the
    step. With ``peak_lr = d_model^-0.5 · warmup^-0.5`` this is exactly the paper's formula.
    """
    step = max(step, 1)
    if warmup_steps == 0:
        return peak_lr / step**0.5
    return peak_lr * min(step / warmup_steps, (warmup_steps / step) ** 0.5)


def learning_rate(step: int, schedule: str, peak_lr: float, warmup_steps: int) -> float:
    if schedule == "constant":
        return peak_lr
    return inverse_sqrt_lr(step, peak_lr, warmup_steps)
