"""ODE solvers for ``dx/dt = v(x, t)``, forward (``0 -> 1``) and inverse (``1 -> 0``).

Every fixed-step method is one function with the signature
``step(v, x, t0, t1) -> x`` (a single step from ``t0`` to ``t1``), so adding a
method is adding one function and its line in ``SOLVERS``. ``v`` maps ``(x, t)`` with ``x``
of shape ``(B, *D)`` and ``t`` of shape ``(B,)`` to a velocity of shape
``(B, *D)``. Time runs from noise (``t = 0``) to data (``t = 1``).

Solving from ``t0 > t1`` integrates backwards in time: that is inversion,
``x_0 = Phi_{1 -> 0}(x_1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from teachers.registry import Registry

Velocity = Callable[[Tensor, Tensor], Tensor]
Stepper = Callable[[Velocity, Tensor, float, float], Tensor]

__all__ = ["SOLVERS", "FixedStep", "Solution", "Sampler", "solve", "nfe_per_step", "on_grid"]


def _time(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def euler_step(v: Velocity, x: Tensor, t0: float, t1: float) -> Tensor:
    """``x + h v(x, t0)``; first order, 1 evaluation."""
    return x + (t1 - t0) * v(x, _time(x, t0))


def heun_step(v: Velocity, x: Tensor, t0: float, t1: float) -> Tensor:
    """Trapezoidal predictor-corrector; second order, 2 evaluations."""
    h = t1 - t0
    k1 = v(x, _time(x, t0))
    k2 = v(x + h * k1, _time(x, t1))
    return x + 0.5 * h * (k1 + k2)


def rk4_step(v: Velocity, x: Tensor, t0: float, t1: float) -> Tensor:
    """Classic Runge-Kutta; fourth order, 4 evaluations."""
    h = t1 - t0
    tm = t0 + 0.5 * h
    k1 = v(x, _time(x, t0))
    k2 = v(x + 0.5 * h * k1, _time(x, tm))
    k3 = v(x + 0.5 * h * k2, _time(x, tm))
    k4 = v(x + h * k3, _time(x, t1))
    return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


@dataclass(frozen=True)
class FixedStep:
    """A fixed-step method: one step, and the velocity evaluations it costs."""

    step: Stepper
    nfe: int


# every solver a setting may name (``eval.solver``, ``guides.solve_solver``, ``--solver``, ...);
# ``adaptive`` (``None``) is torchdiffeq's dopri5, whose cost is counted as it runs
SOLVERS: Registry[FixedStep | None] = Registry(
    "solver",
    {
        "euler": FixedStep(euler_step, 1),
        "heun": FixedStep(heun_step, 2),
        "rk4": FixedStep(rk4_step, 4),
        "adaptive": None,
    },
)


def _fixed(method: str) -> FixedStep:
    fixed = SOLVERS[method]
    if fixed is None:
        raise ValueError(
            f"solver {method!r} has no fixed step; fixed-step solvers: "
            f"{', '.join(n for n, f in SOLVERS.items() if f is not None)}"
        )
    return fixed


def nfe_per_step(method: str) -> int:
    """Velocity evaluations one step of a fixed-step method costs."""
    return _fixed(method).nfe


@dataclass(frozen=True)
class Solution:
    """The end state of a solve, the number of velocity evaluations it cost, and the states at the times
    asked for (``solve(..., at=...)``), in that order."""

    x: Tensor
    nfe: int
    points: tuple[Tensor, ...] = ()


# any model's sampler, teacher or student: (noise (N, *D), steps; None for an adaptive solver, which picks its
# own) -> the samples and their NFE
Sampler = Callable[[Tensor, int | None], Solution]


@torch.no_grad()
def solve(
    v: Velocity,
    x: Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 32,
    method: str = "euler",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    at: Sequence[float] = (),
) -> Solution:
    """Integrate ``dx/dt = v(x, t)`` from ``t0`` to ``t1``.

    ``method`` is one of ``SOLVERS``; fixed-step methods use ``steps`` equal
    steps, ``adaptive`` uses torchdiffeq's dopri5 with ``rtol``/``atol`` and
    ignores ``steps``. ``t0 > t1`` integrates backwards (inversion). ``at``: times on the fixed-step
    grid (``on_grid``) whose states the solution keeps in ``points``, at no extra cost.
    """
    if SOLVERS[method] is None:
        if at:
            raise ValueError("an adaptive solve keeps no states on a grid; ask a fixed-step solver")
        return _solve_adaptive(v, x, t0, t1, rtol, atol)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    fixed = _fixed(method)
    keep = {}
    for t in at:
        if not on_grid(t, t0, t1, steps):
            raise ValueError(f"time {t} is not on the {steps}-step grid from {t0} to {t1}")
        keep[t] = round((t - t0) / (t1 - t0) * steps)
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()
    states = {0: x} if 0 in keep.values() else {}
    for i, (a, b) in enumerate(zip(grid[:-1], grid[1:]), start=1):
        x = fixed.step(v, x, a, b)
        if i in keep.values():
            states[i] = x
    return Solution(x=x, nfe=steps * fixed.nfe, points=tuple(states[keep[t]] for t in at))


def on_grid(t: float, t0: float, t1: float, steps: int) -> bool:
    """Whether ``t`` is one of the ``steps + 1`` times of the equal grid from ``t0`` to ``t1``."""
    k = (t - t0) / (t1 - t0) * steps
    return -1e-9 <= k <= steps + 1e-9 and abs(k - round(k)) < 1e-6


def _solve_adaptive(v: Velocity, x: Tensor, t0: float, t1: float, rtol: float, atol: float) -> Solution:
    from torchdiffeq import odeint  # only the adaptive solver needs it

    calls = [0]

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return v(y, t.to(y.dtype).expand(y.shape[0]))

    times = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    out = odeint(rhs, x, times, method="dopri5", rtol=rtol, atol=atol)
    return Solution(x=out[-1], nfe=calls[0])
