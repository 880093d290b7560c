"""Teacher model folders: a native teacher or a diffusers ``save_pretrained`` folder, read as a velocity
``v(x, t)``; and what any model folder (students too) says about itself without loading weights.

- native teacher: ``model.json`` (role ``teacher``) + ``model.safetensors``, a velocity ``v(x, t)``;
- diffusers: ``config.json`` naming a diffusers class + safetensors weights, read in a named convention
  (``teachers.conventions``).

A teacher's sampler has the signature ``sample(noise (N, *D), steps) -> Solution`` and solves its ODE with
the chosen solver. Loading any folder, students included, is ``student.models.load_model``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from teachers.checkpoint import META_FILE, CheckpointError, CheckpointMeta, load_checkpoint, read_meta
from teachers.conventions import DEFAULT_CONVENTION
from teachers.diffusers_adapter import (
    check_diffusers_teacher,
    diffusers_data_shape,
    is_diffusers_dir,
    load_diffusers_teacher,
)
from teachers.solvers import SOLVERS, Sampler, Solution, solve

__all__ = [
    "MODEL_KINDS",
    "model_kind",
    "model_data_shape",
    "check_model",
    "load_diffusers_model",
    "check_teacher_meta",
    "load_velocity",
    "teacher_sampler",
]

MODEL_KINDS = ("teacher", "student", "diffusers")


def teacher_sampler(model: nn.Module, solver: str) -> Sampler:
    """Solve ``dx/dt = model(x, t)`` from ``t = 0`` to 1 in ``steps`` steps of ``solver`` (``None``: adaptive)."""
    SOLVERS.check(solver)

    def sample(noise: torch.Tensor, steps: int | None) -> Solution:
        return solve(model, noise, 0.0, 1.0, steps or 1, solver)

    return sample


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
        raise CheckpointError(
            f"{Path(path) / META_FILE}: data_shape {list(model_data_shape(path))} does not match "
            f"the data {list(data_shape)}"
        )


def load_diffusers_model(
    path: Path,
    convention: str = DEFAULT_CONVENTION,
    expect_data_shape: tuple[int, ...] | None = None,
    map_location: str = "cpu",
) -> tuple[nn.Module, tuple[int, ...]]:
    """A diffusers folder as a velocity ``v(x, t)`` in ``convention``, and its per-sample shape; checked
    against ``expect_data_shape`` (and the convention) before the weights are loaded."""
    shape = diffusers_data_shape(path)
    if expect_data_shape is not None:
        check_diffusers_teacher(path, expect_data_shape, convention)
    return load_diffusers_teacher(path, shape, convention).to(map_location), shape


def check_teacher_meta(path: Path, meta: CheckpointMeta) -> None:
    """A native teacher is ``v(x, t)``: one time input, or ``CheckpointError`` naming the file."""
    if meta.time_inputs != 1:
        raise CheckpointError(
            f"{path / META_FILE}: a teacher is v(x, t) (time_inputs 1), the file says {meta.time_inputs}"
        )


def load_velocity(path: str | Path, data_shape: tuple[int, ...], convention: str = DEFAULT_CONVENTION) -> nn.Module:
    """A teacher velocity ``v(x, t)`` from a native teacher or a diffusers folder, checked against the data."""
    path = Path(path)
    if model_kind(path) == "diffusers":
        return load_diffusers_model(path, convention, expect_data_shape=data_shape)[0]
    net, meta = load_checkpoint(path, expect_data_shape=data_shape)
    if meta.role == "student":
        raise CheckpointError(f"{path / META_FILE}: a student checkpoint, not a teacher v(x, t)")
    check_teacher_meta(path, meta)
    return net
