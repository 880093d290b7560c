"""A teacher as the run uses it: one checkpoint, or an ensemble of K checkpoints read as one velocity.

An ensemble's velocity is the mean of its members' velocities,

    v(x, t) = (1/K) sum_k v_k(x, t),

an ordinary velocity module (``EnsembleVelocity``), so every solver, guide rule and coupling takes it as it
takes one teacher. Members may differ in seed, width or format: each is loaded by ``load_velocity``, so a
diffusers member works too. ``TeacherSpec`` says what to load (checkpoints and convention) and travels
between processes (the teacher actors, the student workers' distribution-matching phase); ``load_teacher``
is the one function that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from teachers.conventions import DEFAULT_CONVENTION
from teachers.models import load_velocity

__all__ = ["EnsembleVelocity", "TeacherSpec", "load_teacher"]


class EnsembleVelocity(nn.Module):
    """``v(x, t) = (1/K) sum_k v_k(x, t)`` over ``members`` (each ``v_k(x (B, *D), t (B,)) -> (B, *D)``)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.stack([m(x, t) for m in self.members]).mean(dim=0)


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher: a checkpoint (one entry) or an ensemble of its ``checkpoints`` (two or more), each read
    in ``convention`` (diffusers members only)."""

    checkpoints: tuple[str, ...]
    convention: str = DEFAULT_CONVENTION

    @property
    def first(self) -> str:
        """The first checkpoint: the one whose weights ``student.init: teacher`` copies."""
        return self.checkpoints[0]

    @property
    def is_ensemble(self) -> bool:
        return len(self.checkpoints) > 1

    @property
    def key(self) -> str:
        """How reports name it: the checkpoint path, or ``ensemble(PATH, PATH, ...)``."""
        return f"ensemble({', '.join(self.checkpoints)})" if self.is_ensemble else self.first

    @property
    def short_name(self) -> str:
        """How guide records name it (``teachers[i]``): the folder name, or ``ensemble(NAME+NAME+...)``."""
        names = [Path(c).name for c in self.checkpoints]
        return f"ensemble({'+'.join(names)})" if self.is_ensemble else names[0]


def load_teacher(spec: TeacherSpec, data_shape: tuple[int, ...]) -> nn.Module:
    """The teacher velocity ``spec`` names, every checkpoint checked against ``data_shape`` (a
    ``CheckpointError`` names the one that does not fit); an ensemble is an ``EnsembleVelocity``."""
    members = [load_velocity(c, data_shape, spec.convention) for c in spec.checkpoints]
    return EnsembleVelocity(members) if spec.is_ensemble else members[0]
