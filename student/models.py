"""One loader for any model folder: a native teacher, a native student, or a diffusers ``save_pretrained`` folder.

- native teacher: ``model.json`` (role ``teacher``) + ``model.safetensors``, a velocity ``v(x, t)``;
- native student: ``model.json`` (role ``student``, ``extra.objective``) written by the student pool, a
  velocity ``v(x, t)`` or a flow map ``f(x, s, t)`` (``time_inputs: 2``);
- diffusers: ``config.json`` naming a diffusers class + safetensors weights, read in a named convention
  (``teachers.conventions``).

Every sampler has the signature ``sample(noise (N, *D), steps) -> Solution``. A teacher's solves its ODE
with the chosen solver (``teachers.models``, which also reads what a folder is without loading it); a
student's uses ``steps`` student steps (``student.networks.student_sampler``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from student.objectives import student_sampler, time_inputs
from teachers.checkpoint import META_FILE, CheckpointError, load_checkpoint
from teachers.conventions import DEFAULT_CONVENTION
from teachers.solvers import Sampler
from teachers.models import check_teacher_meta, load_diffusers_model, model_kind, teacher_sampler

__all__ = ["LoadedModel", "load_model"]


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
            assert self.objective is not None  # a student's folder records its objective
            return student_sampler(self.objective, self.network)
        return teacher_sampler(self.network, solver)


def load_model(
    path: str | Path,
    convention: str = DEFAULT_CONVENTION,
    expect_data_shape: tuple[int, ...] | None = None,
    map_location: str = "cpu",
) -> LoadedModel:
    """Load any model folder (see the module docstring); ``convention`` applies to diffusers folders only."""
    path = Path(path)
    if model_kind(path) == "diffusers":
        net, shape = load_diffusers_model(path, convention, expect_data_shape, map_location)
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
            raise CheckpointError(
                f"{path / META_FILE}: objective {objective!r} needs time_inputs {needed}, "
                f"the file says {meta.time_inputs}"
            )
    else:
        check_teacher_meta(path, meta)
    return LoadedModel(path, meta.role, net, tuple(meta.data_shape), meta.training, objective)
