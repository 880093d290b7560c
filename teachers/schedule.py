"""Training schedules shared by the teacher and the student loops (torch only): the learning rate and the
EMA of the weights."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["lr_at", "ema_decay_at", "update_ema"]


def lr_at(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr`` at ``steps`` (held there after)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    frac = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay at ``step``: ramps up as ``(1 + step) / (10 + step)`` to at most ``decay``."""
    return min(decay, (1 + step) / (10 + step))


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, in the EMA's dtype (fp32 even when ``model`` is bf16)."""
    with torch.no_grad():
        targets: list[torch.Tensor] = list(ema.parameters())
        sources = [p.detach().to(pe.dtype) for pe, p in zip(targets, model.parameters())]
        torch._foreach_lerp_(targets, sources, 1.0 - decay)  # one fused update, not a kernel per tensor
