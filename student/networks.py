"""The student network. Pure torch (no Ray, Redis or DeepSpeed).

A student is one of the teacher families (``teachers.nets``): ``v(x, t)`` for
the ``velocity`` objective, ``f(x, s, t)`` for ``flow_map``. Either can start
from a teacher checkpoint. Its samplers belong to its objective
(``student.objectives``).
"""

from __future__ import annotations

import torch
from torch import nn

from student.objectives import time_inputs
from teachers.nets import build_network

__all__ = ["build_student", "init_from_teacher"]


def build_student(arch: str, data_shape: tuple[int, ...], arch_kwargs: dict, objective: str) -> nn.Module:
    """A network of the named family with the time inputs the objective needs."""
    return build_network(arch, tuple(data_shape), time_inputs=time_inputs(objective), **arch_kwargs)


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Copy a teacher ``v(x, t)`` into a student of the same family and size.

    A velocity student becomes the teacher. A flow-map student ``f(x, s, t)``
    becomes ``v_teacher(x, s)``: the time embedding's first layer takes the
    teacher's weights on the ``s`` features and zeros on the ``t`` features,
    so at start the one-step map is the teacher's one Euler step.
    """
    src, dst = teacher.state_dict(), student.state_dict()
    out = {}
    for key, value in dst.items():
        if key not in src:
            raise ValueError(f"teacher has no tensor {key!r}: student and teacher must be the same family and size")
        w = src[key]
        if w.shape == value.shape:
            out[key] = w.clone()
        elif key.endswith("embed.mlp.0.weight") and w.shape[0] == value.shape[0] and value.shape[1] % w.shape[1] == 0:
            out[key] = torch.cat([w, torch.zeros(w.shape[0], value.shape[1] - w.shape[1], dtype=w.dtype)], dim=1)
        else:
            raise ValueError(f"tensor {key!r}: teacher {list(w.shape)} vs student {list(value.shape)}")
    student.load_state_dict(out)
