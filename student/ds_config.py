"""The DeepSpeed configuration a student worker runs with, derived from the run's ``student`` section.

DeepSpeed is handed a plain ``torch.optim.Adam`` (``student_optimizer``) instead of an ``optimizer`` section:
its own Adam is a C++/CUDA op it compiles on first use (``fused_adam``; on a GPU that build reads
``TORCH_CUDA_ARCH_LIST`` and fails on values such as ``9.0a``), and a user's first run should not build
anything. ``without_op_builds`` stops the other build DeepSpeed starts on the CPU (its shared-memory
all-reduce); gloo does that all-reduce.
"""

from __future__ import annotations

import torch

__all__ = ["deepspeed_config", "student_optimizer", "without_op_builds"]

# DeepSpeed's C++ communication op its CPU accelerator compiles when it creates its backend
_SHM_COMM_OP = "deepspeed_shm_comm"


def student_optimizer(student, parameters) -> torch.optim.Optimizer:
    """Adam (no weight decay); ``lr`` is overwritten by the loop each step (``lr_at``)."""
    return torch.optim.Adam(parameters, lr=student.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def without_op_builds(deepspeed_ops) -> None:
    """Mark DeepSpeed's shared-memory all-reduce op as unavailable, so creating its communication backend
    on the CPU does not JIT-compile it into ``~/.cache/torch_extensions`` (a minute of g++ at the first
    run); ``deepspeed_ops`` is the ``deepspeed.ops`` module, whose ``__compatible_ops__`` is the one table
    that build consults (``deepspeed.comm.torch.build_shm_op``)."""
    deepspeed_ops.__compatible_ops__[_SHM_COMM_OP] = False


def deepspeed_config(student, world_size: int, precision: str) -> dict:
    """A DeepSpeed config dict: ``batch_size`` records per rank per step, gradient clipping, ZeRO stage and
    ``precision`` (``fp32``, ``bf16`` or ``fp16``, already resolved). No optimizer section (see the module
    docstring) and no scheduler: the loop sets the learning rate each step (``lr_at``)."""
    cfg = {
        "train_micro_batch_size_per_gpu": student.batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": student.batch_size * world_size,
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
