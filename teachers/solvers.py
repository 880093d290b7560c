"""ODE solvers for ``dx/dt = v(x, t)``, forward (``0 -> 1``) and inverse (``1 -> 0``).

Every fixed-step method is one function with the signature
``step(v, x, t0, t1) -> x`` (a single step from ``t0`` to ``t1``), so adding a
method is adding one function to ``STEPPERS``. ``v`` maps ``(x, t)`` with ``x``
of shape ``(B, *D)`` and ``t`` of shape ``(B,)`` to a velocity of shape
``(B, *D)``. Time runs from noise (``t = 0``) to data (``t = 1``).

Solving from ``t0 > t1`` integrates backwards in time: that is inversion,
``x_0 = Phi_{1 -> 0}(x_1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]
Stepper = Callable[[Velocity, Tensor, float, float], Tensor]

__all__ = ["STEPPERS", "SOLVERS", "Solution", "solve", "nfe_per_step"]


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


STEPPERS: dict[str, Stepper] = {"euler": euler_step, "heun": heun_step, "rk4": rk4_step}
SOLVERS = (*STEPPERS, "adaptive")
_NFE_PER_STEP = {"euler": 1, "heun": 2, "rk4": 4}


def nfe_per_step(method: str) -> int:
    """Velocity evaluations one step of a fixed-step method costs."""
    if method not in _NFE_PER_STEP:
        raise ValueError(f"unknown fixed-step solver {method!r}; known: {sorted(_NFE_PER_STEP)}")
    return _NFE_PER_STEP[method]


@dataclass(frozen=True)
class Solution:
    """The end state of a solve and the number of velocity evaluations it cost."""

    x: Tensor
    nfe: int


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
) -> Solution:
    """Integrate ``dx/dt = v(x, t)`` from ``t0`` to ``t1``.

    ``method`` is one of ``SOLVERS``; fixed-step methods use ``steps`` equal
    steps, ``adaptive`` uses torchdiffeq's dopri5 with ``rtol``/``atol`` and
    ignores ``steps``. ``t0 > t1`` integrates backwards (inversion).
    """
    if method == "adaptive":
        return _solve_adaptive(v, x, t0, t1, rtol, atol)
    if method not in STEPPERS:
        raise ValueError(f"unknown solver {method!r}; known: {list(SOLVERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    step = STEPPERS[method]
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()
    for a, b in zip(grid[:-1], grid[1:]):
        x = step(v, x, a, b)
    return Solution(x=x, nfe=steps * _NFE_PER_STEP[method])


def _solve_adaptive(v: Velocity, x: Tensor, t0: float, t1: float, rtol: float, atol: float) -> Solution:
    from torchdiffeq import odeint

    calls = [0]

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return v(y, t.to(y.dtype).expand(y.shape[0]))

    times = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    out = odeint(rhs, x, times, method="dopri5", rtol=rtol, atol=atol)
    return Solution(x=out[-1], nfe=calls[0])
