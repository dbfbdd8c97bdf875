"""Which precision a run computes in: ``training.precision`` as set, or for ``auto`` what this hardware does fastest.

On a CPU, bf16 is only fast where the processor has bf16 instructions (AVX512_BF16 or AMX): there oneDNN's bf16
matmuls run several times faster than fp32. Elsewhere (AVX2, AVX-512 without BF16) torch emulates bf16 and it is
slower than fp32 (measured ~33x on an AVX2 EPYC, ~2.5x here on an AVX-512 Xeon without BF16), so ``auto`` stays
fp32. Weights stay fp32 either way; bf16 is autocast for the matmuls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tunesmith.core.environment import cpu_flags

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the instructions that make bf16 fast


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    reason: str  # why, in words a person reads in the terminal and in environment.json

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_precision(setting: str) -> Precision:
    """``setting`` (training.precision) resolved for this machine, with the reason."""
    if setting != "auto":
        return Precision(setting, f"training.precision is {setting}")
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: the GPU ({torch.cuda.get_device_name(0)}) computes bf16 natively")
        return Precision("fp32", "auto: the GPU has no bf16 support")
    if torch.backends.mps.is_available():
        return Precision("fp32", "auto: Apple GPUs train in fp32 here")
    found = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags()]
    if found:
        return Precision(
            "bf16", f"auto: the CPU has {' and '.join(f.upper() for f in found)}, so bf16 matmuls are fast"
        )
    return Precision("fp32", "auto: the CPU has no AVX512_BF16 or AMX, so bf16 would be emulated and slower than fp32")


@contextlib.contextmanager
def computing_in(precision: Precision, device: torch.device | str) -> Iterator[None]:
    """Autocast to bf16/fp16 for inference (generation, scoring) when that is the chosen precision."""
    if precision.name == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision.name == "bf16" else torch.float16
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
