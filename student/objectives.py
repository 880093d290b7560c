"""The student's losses on a Bezier path (DESIGN.md 2.5). Pure torch: no Ray, Redis or DeepSpeed.

Control points ``P_0 .. P_n`` are ``(B, *D)`` tensors with ``P_0 = x_0`` (noise)
and ``P_n = x_1`` (data); ``n`` = 1, 2, 3 for the linear, quadratic and cubic
paths. Times are ``(B,)`` in ``[0, 1]``.

- ``velocity`` (the paper's): ``E_t || v(B(t), t) - B'(t) ||^2``. On the
  linear path this is the rectified-flow loss on the pairs ``(x_0, x_1)``.
- ``flow_map``: ``f(x, s, t)`` with ``Phi(x, s, t) = x + (t - s) f(x, s, t)``,
  regressed on the path's average velocity
  ``E_{s<=t} || f(B(s), s, t) - (B(t) - B(s)) / (t - s) ||^2``.
  That is the design's ``|| Phi(B(s), s, t) - B(t) ||^2`` divided by
  ``(t - s)^2``: the same minimiser, but pairs with ``t`` near ``s`` keep their
  weight (in map space they vanish), so ``f(x, s, s)`` learns the velocity
  ``B'(s)`` and the network also serves the velocity sampler. A fixed share of
  pairs is ``(0, 1)`` (the one-step map) and a share is ``s = t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from student.bezier import bezier_point, bezier_velocity, flow_map_velocity
from teachers.rectified_flow import sample_times

__all__ = ["PATH_DEGREES", "OBJECTIVES", "ObjectiveSettings", "path_degree", "velocity_loss", "flow_map_loss",
           "sample_flow_map_times", "objective_loss", "time_inputs"]

PATH_DEGREES = {"linear": 1, "quadratic": 2, "cubic": 3}


def path_degree(path: str) -> int:
    """Degree ``n`` of a named path (``linear`` 1, ``quadratic`` 2, ``cubic`` 3)."""
    if path not in PATH_DEGREES:
        raise ValueError(f"unknown path {path!r}; known: {sorted(PATH_DEGREES)}")
    return PATH_DEGREES[path]


@dataclass(frozen=True)
class ObjectiveSettings:
    """How times are drawn: ``time_sampling`` names the density of ``t`` (and of ``s, t`` before sorting);
    ``endpoint_share`` of flow-map pairs are ``(0, 1)``, ``diagonal_share`` have ``s = t``."""

    time_sampling: str = "uniform"
    endpoint_share: float = 0.25
    diagonal_share: float = 0.1


def velocity_loss(model: nn.Module, points: Sequence[Tensor], t: Tensor) -> Tensor:
    """``mean || v(B(t), t) - B'(t) ||^2``; ``model(x, t)`` is a velocity field, ``t: (B,)``."""
    return (model(bezier_point(points, t), t) - bezier_velocity(points, t)).pow(2).mean()


def flow_map_loss(model: nn.Module, points: Sequence[Tensor], s: Tensor, t: Tensor) -> Tensor:
    """``mean || f(B(s), s, t) - (B(t) - B(s)) / (t - s) ||^2`` (``B'(s)`` where ``t = s``); ``model(x, s, t)``."""
    return (model(bezier_point(points, s), s, t) - flow_map_velocity(points, s, t)).pow(2).mean()


def sample_flow_map_times(n: int, settings: ObjectiveSettings, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(s, t)`` with ``s <= t``: two draws from the density, sorted; then ``endpoint_share`` of the rows
    set to ``(0, 1)`` and ``diagonal_share`` to ``t = s``."""
    a, b = sample_times(n, settings.time_sampling, g), sample_times(n, settings.time_sampling, g)
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    u = torch.rand(n, generator=g)
    ends = u < settings.endpoint_share
    diag = (u >= settings.endpoint_share) & (u < settings.endpoint_share + settings.diagonal_share)
    s = torch.where(ends, torch.zeros_like(s), s)
    t = torch.where(ends, torch.ones_like(t), torch.where(diag, s, t))
    return s, t


def _velocity(model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator) -> Tensor:
    t = sample_times(points[0].shape[0], settings.time_sampling, g).to(points[0].device, points[0].dtype)
    return velocity_loss(model, points, t)


def _flow_map(model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator) -> Tensor:
    s, t = sample_flow_map_times(points[0].shape[0], settings, g)
    ref = points[0]
    return flow_map_loss(model, points, s.to(ref.device, ref.dtype), t.to(ref.device, ref.dtype))


OBJECTIVES: dict[str, Callable[[nn.Module, Sequence[Tensor], ObjectiveSettings, torch.Generator], Tensor]] = {
    "velocity": _velocity,
    "flow_map": _flow_map,
}

_TIME_INPUTS = {"velocity": 1, "flow_map": 2}


def time_inputs(objective: str) -> int:
    """How many times the student network takes: 1 (``v(x, t)``) or 2 (``f(x, s, t)``)."""
    if objective not in _TIME_INPUTS:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(_TIME_INPUTS)}")
    return _TIME_INPUTS[objective]


def objective_loss(objective: str, model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings,
                   g: torch.Generator) -> Tensor:
    """The named objective's loss on a batch of control points, with times drawn from ``g`` (on CPU)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[objective](model, points, settings, g)
