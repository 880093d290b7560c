"""The DeepSpeed configuration a student worker runs with, derived from the run's ``student`` section."""

from __future__ import annotations

__all__ = ["deepspeed_config", "resolve_precision", "lr_at"]

import math


def resolve_precision(precision: str, on_gpu: bool, bf16_supported: bool) -> str:
    """``fp32`` on CPU whatever was asked (DeepSpeed's CPU path trains in fp32); ``auto`` picks bf16 on GPUs
    that support it; an explicit ``bf16`` on a GPU without it is an error."""
    if not on_gpu:
        return "fp32"
    if precision == "auto":
        return "bf16" if bf16_supported else "fp32"
    if precision == "bf16" and not bf16_supported:
        raise ValueError("student.precision: bf16 was asked for but this GPU does not support it; "
                         "allowed here: auto, fp32, fp16")
    return precision


def deepspeed_config(student, world_size: int, precision: str) -> dict:
    """A DeepSpeed config dict: Adam, ``batch_size`` records per rank per step, gradient clipping, ZeRO stage.

    The learning rate is set by the loop each step (``lr_at``), so no DeepSpeed scheduler is configured.
    """
    cfg = {
        "train_micro_batch_size_per_gpu": student.batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": student.batch_size * world_size,
        "optimizer": {"type": "Adam", "params": {"lr": student.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                                                 "weight_decay": 0.0}},
        "gradient_clipping": student.grad_clip,
        "zero_optimization": {"stage": student.zero_stage},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return cfg


def lr_at(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr`` at ``steps`` (held there after)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    frac = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
