"""The student network and its samplers. Pure torch (no Ray, Redis or DeepSpeed).

A student is one of the teacher families (``teachers.nets``): ``v(x, t)`` for
the ``velocity`` objective, ``f(x, s, t)`` for ``flow_map``. Either can start
from a teacher checkpoint. Every sampler has the signature
``(noise (N, *D), steps) -> Solution`` and uses ``steps`` network evaluations.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from student.objectives import time_inputs
from teachers.nets import build_network
from teachers.solvers import Solution

__all__ = ["build_student", "init_from_teacher", "flow_map_step", "velocity_sampler", "flow_map_sampler",
           "student_sampler"]


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


def _batch_time(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


def flow_map_step(model: nn.Module, x: Tensor, s: float, t: float) -> Tensor:
    """``Phi(x, s, t) = x + (t - s) f(x, s, t)``."""
    return x + (t - s) * model(x, _batch_time(x, s), _batch_time(x, t))


def _grid_sampler(step: Callable[[Tensor, float, float], Tensor]) -> Callable[[Tensor, int], Solution]:
    """``steps`` applications of ``step(x, a, b)`` on an equal grid of ``[0, 1]``; one network call each."""

    @torch.no_grad()
    def sample(noise: Tensor, steps: int) -> Solution:
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
        x = noise
        for a, b in zip(grid[:-1], grid[1:]):
            x = step(x, a, b)
        return Solution(x=x, nfe=steps)

    return sample


def velocity_sampler(model: nn.Module) -> Callable[[Tensor, int], Solution]:
    """Euler on the student's ODE ``dx/dt = v(x, t)`` with ``steps`` equal steps."""
    return _grid_sampler(lambda x, a, b: x + (b - a) * model(x, _batch_time(x, a)))


def flow_map_sampler(model: nn.Module) -> Callable[[Tensor, int], Solution]:
    """The flow map composed on an equal grid: ``Phi(.., t_{k-1}, t_k)`` for ``k = 1..steps``."""
    return _grid_sampler(lambda x, a, b: flow_map_step(model, x, a, b))


_SAMPLERS = {"velocity": velocity_sampler, "flow_map": flow_map_sampler}


def student_sampler(objective: str, model: nn.Module) -> Callable[[Tensor, int], Solution]:
    """The sampler that matches how the student was trained."""
    if objective not in _SAMPLERS:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(_SAMPLERS)}")
    return _SAMPLERS[objective](model)
