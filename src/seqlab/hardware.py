"""What this machine can do fast: detected, never assumed.

bf16 matrix products run several times faster than fp32 on CPUs with AMX tiles (4–7× on the
Xeons measured) and about twice as fast on AMD's AVX512-BF16 cores (Zen 4, Zen 5), but tens of
times *slower* on CPUs without bf16 instructions, and even with AVX512-BF16 an Intel core without
AMX (a Xeon whose hypervisor hides its tiles) multiplies bf16 at half its fp32 speed. So bf16 is
only ever used when asked for, and a warning says when the hardware will not help: the CPU's
flags say whether it has bf16 instructions at all, one measured product whether they are fast.
"""

from __future__ import annotations

import ctypes
import os
import time
from contextlib import nullcontext
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC`` (empty where /proc/cpuinfo does not say)."""
    return _cpuinfo().get("model name", "")


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, … (empty where /proc/cpuinfo does not say)."""
    return _cpuinfo().get("vendor_id", "")


@lru_cache(maxsize=1)
def has_amx() -> bool:
    """True on CPUs with AMX tile units for bf16 (Intel Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


def has_bf16_units(device: torch.device) -> bool:
    """True where bf16 arithmetic has hardware support: AMX/AVX512-BF16 CPUs, bf16-capable GPUs.
    Whether bf16 matrix products are also *faster* than fp32 there: :func:`bf16_matmul_speedup`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


@lru_cache(maxsize=1)
def bf16_matmul_speedup() -> float:
    """How many times faster this CPU multiplies matrices in bfloat16 than in float32: one
    linear layer of the size a training step multiplies (512 rows, 1024 → 1024), each precision's
    fastest of 3 calls after a warm-up, with torch's current threads; measured once per process
    (about 0.1 s, most of it oneDNN's first call). Flags cannot tell: an Emerald Rapids Xeon VM
    whose hypervisor hides the AMX tiles (only ``avx512_bf16`` shown) measured 0.54×, where the
    same CPU model with its tiles multiplies square bf16 matrices about 7× faster than float32
    (benchmarks/RESULTS.md)."""
    x = torch.randn(512, 1024)
    weight = torch.randn(1024, 1024)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x_, w_ = x.to(dtype), weight.to(dtype)
        torch.nn.functional.linear(x_, w_)
        best = float("inf")
        for _ in range(3):  # the fastest call: a noisy neighbour's slice only ever slows one
            start = time.perf_counter()
            torch.nn.functional.linear(x_, w_)
            best = min(best, time.perf_counter() - start)
        seconds[dtype] = best
    return seconds[torch.float32] / seconds[torch.bfloat16]


@lru_cache(maxsize=1)
def fp32_gemm_prefers_onednn() -> bool:
    """True where float32 matrix products run faster through oneDNN than through MKL.

    PyTorch's CPU builds multiply float32 matrices with MKL, which runs its AVX-512 kernels only
    on Intel processors; on AMD's AVX-512 cores (Zen 4, Zen 5) it takes the AVX2 ones, at about
    half of what oneDNN, also inside PyTorch, reaches on the same cores (2 Zen 5 cores, the
    training products at 4,096 rows: 180-220 vs 330-510 GFLOP/s; benchmarks/RESULTS.md). CTranslate2 makes the
    same choice for AMD. Intel CPUs and CPUs without AVX-512 keep MKL.
    """
    return (cpu_vendor() == "AuthenticAMD" and "avx512f" in cpu_flags()
            and torch.backends.mkldnn.is_available())


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` (fp32: none). Weights stay fp32; matrix products run in
    bf16/fp16."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_warning(device: torch.device, precision: str) -> str | None:
    """Why ``precision`` will be slow here, in one line, or None."""
    if precision != "bf16":
        return None
    if not has_bf16_units(device):
        return (f"precision bf16 on a {device.type} without bf16 matrix units (no amx_bf16/avx512_bf16): "
                "expect it to be slower than fp32")
    if device.type == "cpu" and (speedup := bf16_matmul_speedup()) < 1.0:
        return (f"precision bf16: this CPU multiplies bf16 matrices at {speedup:.2f}× its fp32 speed (measured; "
                f"{'AMX tiles present' if has_amx() else 'AVX512-BF16 without AMX tiles'}): expect bf16 to be "
                "slower than fp32 here (for faster decoding try --precision int8)")
    return None


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_TRIM_THRESHOLD = 1024 * 1024 * 1024


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep the memory torch frees for the next tensors, instead of handing
    it back to the system; True where that was done (once per process).

    A decoding step makes and frees tensors of megabytes (a batch's logits, an FFN's hidden
    layer); by default glibc returns such blocks to the system (``munmap``, or trimming the heap
    top) and the next step's tensor is fresh memory that faults in page by page, which a virtual
    machine makes dear. Every block now comes from the heap (glibc maps blocks of 32 MB and more
    afresh whatever its threshold, so mapping is turned off), and the heap keeps up to 1 GB free:
    the process's peak memory stays about what it was, it just is not given back between steps.
    Decoding, 64 sentences of the benchmark models, int8, an Emerald Rapids VM (benchmarks/RESULTS.md):
    tiny greedy (``--compile``) 7,600-14,100 page faults a run → 0-70, system time 10-29 → 1-5 ms
    of a 210 ms run; small beam 5, 10,000-37,000 → 6-1,900 and 51-78 → 15-17 ms of 2.4 s. A few
    percent at most, inside that VM's noise in wall time; peak memory the same. Training
    (:func:`seqlab.training.trainer.train`), whose small benchmark model makes 32 MB tensors (an
    FFN's hidden layer of 4,096 tokens in float32), two Zen 4 cores, 9 pairs of processes
    alternated: small fp32 0.98-1.13× the tok/s without (median 1.035; page faults 1.7-1.9 M →
    0.9 M over 5-6 steps), bf16 0.98-1.07× (median 1.03); tiny within noise; peak RSS 0-4%
    higher. This is what PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) gets by
    preloading jemalloc or tcmalloc. Left alone where the user chose (a ``MALLOC_*`` setting in
    the environment, an allocator in ``LD_PRELOAD``) and off glibc."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr (Windows)
        return False
    if os.environ.get("LD_PRELOAD") or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        # A trim threshold set by hand also stops glibc from moving it as mapped blocks are freed.
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
