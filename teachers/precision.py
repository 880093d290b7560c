"""Resolved precisions (``fp32``, ``bf16``, ``fp16``) as torch dtypes and autocast contexts (torch only).

Which precision a stage uses is decided in ``teachers.device_plan``; training and sampling code takes the
resolved name and runs its forward passes under ``autocast``, keeping its weights in fp32.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DTYPES", "PRECISIONS", "precision_dtype", "autocast"]

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
