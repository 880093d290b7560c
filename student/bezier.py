"""Exact Bezier paths between noise and data.

Conventions (used everywhere in the project): time runs ``t in [0, 1]``;
``x_0`` is noise at ``t = 0`` and ``x_1`` is data at ``t = 1``. A path of
degree ``n`` has control points ``P_0 .. P_n`` with ``P_0 = x_0`` and
``P_n = x_1``; the interior points are the teachers' guides.

    B(t)  = sum_k C(n, k) (1 - t)^(n - k) t^k P_k
    B'(t) = n sum_k C(n - 1, k) (1 - t)^(n - 1 - k) t^k (P_{k+1} - P_k)

Control points are a sequence of tensors of one shape ``(B, *D)``; times are
tensors of shape ``(B,)`` (or scalars) and broadcast over ``D``. Nothing here
is learned: it is the exact supervision the student is trained on.
"""

from __future__ import annotations

import operator
from functools import reduce
from math import comb
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "bernstein",
    "bezier_point",
    "bezier_velocity",
    "elevate_degree",
    "flow_map_target",
    "flow_map_velocity",
]


def _times_like(t: Tensor | float, ref: Tensor) -> Tensor:
    """Broadcast times of shape ``(B,)`` or ``()`` against ``ref`` of shape ``(B, *D)``."""
    t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
    if t.dim() == 0:
        return t
    if t.shape[0] != ref.shape[0]:
        raise ValueError(f"times have batch {t.shape[0]}, control points have batch {ref.shape[0]}")
    return t.reshape(t.shape[0], *([1] * (ref.dim() - 1)))


def _check_points(points: Sequence[Tensor]) -> None:
    if len(points) < 2:
        raise ValueError(f"a Bezier path needs at least 2 control points, got {len(points)}")
    shape = points[0].shape
    for k, p in enumerate(points):
        if p.shape != shape:
            raise ValueError(f"control point {k} has shape {tuple(p.shape)}, point 0 has {tuple(shape)}")


def bernstein(n: int, k: int, t: Tensor) -> Tensor:
    """Bernstein basis polynomial ``C(n, k) (1 - t)^(n - k) t^k``."""
    return comb(n, k) * (1 - t) ** (n - k) * t**k


def bezier_point(points: Sequence[Tensor], t: Tensor | float) -> Tensor:
    """``B(t)`` for control points ``P_0..P_n`` (each ``(B, *D)``); returns ``(B, *D)``."""
    _check_points(points)
    n = len(points) - 1
    tt = _times_like(t, points[0])
    return reduce(operator.add, (bernstein(n, k, tt) * p for k, p in enumerate(points)))


def bezier_velocity(points: Sequence[Tensor], t: Tensor | float) -> Tensor:
    """``B'(t) = n sum_k b_{n-1,k}(t) (P_{k+1} - P_k)``; returns ``(B, *D)``.

    For ``n = 1`` this is ``x_1 - x_0``, the rectified-flow target.
    """
    _check_points(points)
    n = len(points) - 1
    tt = _times_like(t, points[0])
    return n * reduce(operator.add, (bernstein(n - 1, k, tt) * (points[k + 1] - points[k]) for k in range(n)))


def elevate_degree(points: Sequence[Tensor]) -> list[Tensor]:
    """The same curve written with one more control point (degree ``n + 1``).

    ``Q_k = (k / (n + 1)) P_{k-1} + (1 - k / (n + 1)) P_k`` for ``k = 0..n+1``.
    """
    _check_points(points)
    n = len(points) - 1
    out = [points[0]]
    for k in range(1, n + 1):
        a = k / (n + 1)
        out.append(a * points[k - 1] + (1 - a) * points[k])
    out.append(points[n])
    return out


def flow_map_target(points: Sequence[Tensor], s: Tensor | float, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Input and target of the flow-map objective: ``(B(s), B(t))``.

    The student's map ``Phi(x, s, t)`` is regressed so that
    ``Phi(B(s), s, t) = B(t)``. Because ``B`` is analytic, every ``(s, t)``
    has an exact target and the targets compose: ``(s -> t)`` then
    ``(t -> u)`` lands on the target of ``(s -> u)``.
    """
    return bezier_point(points, s), bezier_point(points, t)


def flow_map_velocity(points: Sequence[Tensor], s: Tensor | float, t: Tensor | float) -> Tensor:
    """Average velocity ``(B(t) - B(s)) / (t - s)``, the target of ``f`` in
    ``Phi(x, s, t) = x + (t - s) f(x, s, t)``. Where ``t == s`` it is ``B'(s)``.
    """
    b_s, b_t = flow_map_target(points, s, t)
    ref = points[0]
    ss, tt = _times_like(s, ref), _times_like(t, ref)
    dt = tt - ss
    same = dt == 0
    safe = torch.where(same, torch.ones_like(dt), dt)
    average = (b_t - b_s) / safe
    if bool(same.any()):
        return torch.where(same, bezier_velocity(points, s), average)
    return average
