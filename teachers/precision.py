"""Resolved precisions (``fp32``, ``bf16``, ``fp16``) as torch dtypes and autocast contexts (torch only).

Which precision a stage uses is decided in ``teachers.device_plan``; training and sampling code takes the
resolved name and runs its forward passes under ``autocast``, keeping its weights in fp32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

__all__ = ["DTYPES", "PRECISIONS", "precision_dtype", "autocast", "cpu_has_native_bf16"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# what a ``precision`` setting may say: a resolved precision, or ``auto`` (teachers.device_plan resolves it)
PRECISIONS: tuple[str, ...] = ("auto", *DTYPES)


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in DTYPES:
        raise ValueError(f"unknown resolved precision {precision!r}; known: {list(DTYPES)}")
    return DTYPES[precision]


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` to bf16/fp16 on ``device`` (weights stay fp32); a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision_dtype(precision))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16``; there a bf16 forward
    pass of the digits UNet takes half the fp32 time, elsewhere it is emulated and slower than fp32);
    ``None`` where ``/proc/cpuinfo`` does not say (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    if not flags:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & flags)
