"""What this machine can do fast: detected, never assumed.

bf16 matrix products run several times faster than fp32 on CPUs with AMX or AVX512-BF16 units
(and on recent GPUs), but tens of times *slower* on CPUs without them, so bf16 is only ever
used when asked for, and a warning says when the hardware will not help.
"""

from __future__ import annotations

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


def has_fast_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products have hardware support: AMX/AVX512-BF16 CPUs, bf16-capable GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


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
    if precision == "bf16" and not has_fast_bf16(device):
        return (f"precision bf16 on a {device.type} without bf16 matrix units (no amx_bf16/avx512_bf16): "
                "expect it to be slower than fp32")
    return None
