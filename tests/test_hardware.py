"""What the machine can do fast (seqlab.hardware): flags for what exists, a measurement for what is fast."""

import ast
import math
import os
import subprocess
import sys

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


FREE_AND_MAKE_AGAIN = """
import resource, sys, torch
from seqlab.hardware import keep_freed_memory
if not keep_freed_memory():
    sys.exit(3)
faults = []
for mb in (12, 24, 12, 40, 40, 40, 40):  # as a step's logits and FFN hidden layer: made, written, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mb * 1024 * 1024 // 4).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults)
"""


def test_freed_memory_is_kept_for_the_next_tensors():
    """After keep_freed_memory a 12 MB tensor made again reuses the memory the first one freed,
    where glibc's defaults map the first one afresh and unmap it when it is freed, so that the
    second pages in its 3,072 pages again (seen here: [3159, 6145, 3050] faults without, [3137,
    6144, 0] with). So do 40 MB ones, which glibc maps afresh whatever its threshold unless
    mapping is off ([10241] * 4 without; [10240, 0, 0, 0] with, or now and then [7168, 10240,
    10240, 0]). In a fresh process: this one's allocator has a history."""
    run = subprocess.run([sys.executable, "-c", FREE_AND_MAKE_AGAIN], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"})
    if run.returncode == 3:
        pytest.skip("not glibc")
    assert run.returncode == 0, run.stderr
    faults = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    pages_12mb = 12 * 1024 * 1024 // 4096
    assert faults[0] > pages_12mb * 9 // 10, faults  # the first one pages in (the measure works)
    assert faults[2] < pages_12mb // 10, faults  # the second reuses what the first freed
    assert min(faults[4:]) < pages_12mb // 10, faults  # above 32 MB too


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"}, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}])
def test_an_allocator_chosen_in_the_environment_is_left_alone(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    hardware.keep_freed_memory.cache_clear()
    try:
        assert hardware.keep_freed_memory() is False
    finally:
        hardware.keep_freed_memory.cache_clear()
