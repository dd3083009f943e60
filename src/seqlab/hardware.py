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
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_fast_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products have hardware support: AMX/AVX512-BF16 CPUs, bf16-capable GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


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
