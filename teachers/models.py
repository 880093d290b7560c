"""One loader for any model folder: a native teacher, a native student, or a diffusers ``save_pretrained`` folder.

- native teacher: ``model.json`` (role ``teacher``) + ``model.safetensors``, a velocity ``v(x, t)``;
- native student: ``model.json`` (role ``student``, ``extra.objective``) written by the student pool, a
  velocity ``v(x, t)`` or a flow map ``f(x, s, t)`` (``time_inputs: 2``);
- diffusers: ``config.json`` naming a diffusers class + safetensors weights, read in a named convention
  (``teachers.conventions``).

Every sampler has the signature ``sample(noise (N, *D), steps) -> Solution``. A teacher's solves its ODE
with the chosen solver; a student's uses ``steps`` student steps (``student.networks.student_sampler``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from student.networks import student_sampler
from student.objectives import time_inputs
from teachers.checkpoint import META_FILE, CheckpointError, load_checkpoint, read_meta
from teachers.conventions import DEFAULT_CONVENTION
from teachers.diffusers_adapter import (check_diffusers_teacher, diffusers_data_shape, is_diffusers_dir,
                                        load_diffusers_teacher)
from teachers.solvers import SOLVERS, Solution, solve

__all__ = ["MODEL_KINDS", "LoadedModel", "model_kind", "model_data_shape", "check_model", "load_model",
           "load_velocity", "teacher_sampler"]

MODEL_KINDS = ("teacher", "student", "diffusers")

Sampler = Callable[[torch.Tensor, int | None], Solution]


def teacher_sampler(model: nn.Module, solver: str) -> Sampler:
    """Solve ``dx/dt = model(x, t)`` from ``t = 0`` to 1 in ``steps`` steps of ``solver`` (``None``: adaptive)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {list(SOLVERS)}")

    def sample(noise: torch.Tensor, steps: int | None) -> Solution:
        return solve(model, noise, 0.0, 1.0, steps or 1, solver)

    return sample


@dataclass
class LoadedModel:
    """A loaded network and what is known about it. ``training`` is the run configuration the folder records
    (``{}`` for a diffusers folder); ``objective`` is the student's (``None`` for teachers)."""

    path: Path
    kind: str
    network: nn.Module
    data_shape: tuple[int, ...]
    training: dict[str, Any] = field(default_factory=dict)
    objective: str | None = None

    def sampler(self, solver: str = "euler") -> Sampler:
        """Teachers: ``solver`` on their ODE. Students: their own sampler (``solver`` does not apply)."""
        if self.kind == "student":
            return student_sampler(self.objective, self.network)
        return teacher_sampler(self.network, solver)


def model_kind(path: str | Path) -> str:
    """``teacher``, ``student`` or ``diffusers``; ``CheckpointError`` naming the file when it is none of them."""
    if is_diffusers_dir(path):
        return "diffusers"
    meta = read_meta(path)
    if meta.role not in ("teacher", "student"):
        raise CheckpointError(f"{Path(path) / META_FILE}: role {meta.role!r} unknown; known: teacher, student")
    return meta.role


def model_data_shape(path: str | Path) -> tuple[int, ...]:
    """The per-sample shape a model folder (any kind) was made for, read without loading weights."""
    return diffusers_data_shape(path) if is_diffusers_dir(path) else tuple(read_meta(path).data_shape)


def check_model(path: str | Path, data_shape: tuple[int, ...], convention: str = DEFAULT_CONVENTION) -> None:
    """Refuse, without loading weights, a folder that does not fit ``data_shape`` (or, for diffusers, the
    convention); the ``CheckpointError`` names the file."""
    if is_diffusers_dir(path):
        check_diffusers_teacher(path, data_shape, convention)
    elif model_data_shape(path) != tuple(data_shape):
        raise CheckpointError(f"{Path(path) / META_FILE}: data_shape {list(model_data_shape(path))} does not match "
                              f"the data {list(data_shape)}")


def load_model(path: str | Path, convention: str = DEFAULT_CONVENTION,
               expect_data_shape: tuple[int, ...] | None = None, map_location: str = "cpu") -> LoadedModel:
    """Load any model folder (see the module docstring); ``convention`` applies to diffusers folders only."""
    path = Path(path)
    if model_kind(path) == "diffusers":
        shape = diffusers_data_shape(path)
        if expect_data_shape is not None:
            check_diffusers_teacher(path, expect_data_shape, convention)
        net = load_diffusers_teacher(path, shape, convention).to(map_location)
        return LoadedModel(path, "diffusers", net, shape)
    net, meta = load_checkpoint(path, expect_data_shape=expect_data_shape, map_location=map_location)
    objective = None
    if meta.role == "student":
        objective = meta.extra.get("objective")
        if objective is None:
            raise CheckpointError(f"{path / META_FILE}: a student checkpoint needs extra.objective")
        try:
            needed = time_inputs(objective)
        except ValueError as err:
            raise CheckpointError(f"{path / META_FILE}: extra.objective: {err}") from None
        if needed != meta.time_inputs:
            raise CheckpointError(f"{path / META_FILE}: objective {objective!r} needs time_inputs {needed}, "
                                  f"the file says {meta.time_inputs}")
    elif meta.time_inputs != 1:
        raise CheckpointError(f"{path / META_FILE}: a teacher is v(x, t) (time_inputs 1), the file says "
                              f"{meta.time_inputs}")
    return LoadedModel(path, meta.role, net, tuple(meta.data_shape), meta.training, objective)


def load_velocity(path: str | Path, data_shape: tuple[int, ...], convention: str = DEFAULT_CONVENTION) -> nn.Module:
    """A teacher velocity ``v(x, t)`` from a native teacher or a diffusers folder, checked against the data."""
    loaded = load_model(path, convention, expect_data_shape=data_shape)
    if loaded.kind == "student":
        raise CheckpointError(f"{Path(path) / META_FILE}: a student checkpoint, not a teacher v(x, t)")
    return loaded.network
