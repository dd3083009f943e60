"""What the machine can do fast (seqlab.hardware): flags for what exists, a measurement for what is fast."""

import math

import pytest
import torch

from seqlab import hardware
from seqlab.hardware import bf16_matmul_speedup, has_amx, has_bf16_units, precision_warning

CPU = torch.device("cpu")


def test_bf16_speedup_is_measured_once_and_is_a_ratio():
    speedup = bf16_matmul_speedup()
    assert math.isfinite(speedup) and speedup > 0
    assert bf16_matmul_speedup() is speedup  # cached: one measurement per process


@pytest.mark.skipif(not has_amx(), reason="AMX tiles multiply bf16 4-7× faster than fp32; other CPUs vary")
def test_amx_multiplies_bf16_faster_than_fp32():
    assert bf16_matmul_speedup() > 1.5


@pytest.mark.parametrize("units, speedup, warned", [
    (False, None, "without bf16 matrix units"),
    (True, 0.54, "0.54× its fp32 speed"),  # AVX512-BF16 without AMX on an Intel core
    (True, 2.0, None),  # AMD's AVX512-BF16 cores, AMX Xeons
])
def test_bf16_warning_follows_the_flags_then_the_measurement(units, speedup, warned, monkeypatch):
    monkeypatch.setattr(hardware, "has_bf16_units", lambda device: units)
    measured = []
    monkeypatch.setattr(hardware, "bf16_matmul_speedup", lambda: measured.append(1) or speedup)
    warning = precision_warning(CPU, "bf16")
    if warned is None:
        assert warning is None
    else:
        assert warned in warning and "\n" not in warning
    assert len(measured) == (1 if units else 0)  # no measurement where the flags already say no
    assert precision_warning(CPU, "fp32") is None and precision_warning(CPU, "int8") is None


def test_flags_decide_whether_bf16_units_exist(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not has_bf16_units(CPU)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert has_bf16_units(CPU)
