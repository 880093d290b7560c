"""Solvers converge at their orders; inversion round-trips on a trained teacher."""

import math

import pytest
import torch

from teachers.checkpoint import load_checkpoint
from teachers.evaluation import straightness
from teachers.solvers import SOLVERS, nfe_per_step, solve


def analytic_v(x, t):
    """dx/dt = x cos(t): x(t) = x(0) exp(sin t)."""
    return x * torch.cos(t)[:, None]


def exact(x0, t):
    return x0 * math.exp(math.sin(t))


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    x0 = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
    errors = [(solve(analytic_v, x0, 0.0, 1.0, n, method).x - exact(x0, 1.0)).abs().max().item() for n in (8, 16, 32)]
    rates = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:])]
    assert all(abs(r - order) < 0.25 for r in rates), (method, errors, rates)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_nfe_counts(method):
    calls = []

    def v(x, t):
        calls.append(1)
        return analytic_v(x, t)

    sol = solve(v, torch.ones(2, 1, dtype=torch.float64), 0.0, 1.0, 5, method)
    assert sol.nfe == len(calls) == 5 * nfe_per_step(method)


def test_adaptive_is_accurate_and_counts_nfe():
    x0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    sol = solve(analytic_v, x0, 0.0, 1.0, method="adaptive", rtol=1e-8, atol=1e-8)
    assert torch.allclose(sol.x, exact(x0, 1.0), atol=1e-6)
    assert sol.nfe > 6


@pytest.mark.parametrize("method", SOLVERS)
def test_backward_solve_inverts_analytic_flow(method):
    x1 = exact(torch.tensor([[0.3], [-1.2]], dtype=torch.float64), 1.0)
    back = solve(analytic_v, x1, 1.0, 0.0, 64, method, rtol=1e-8, atol=1e-8).x
    tol = {"euler": 5e-2, "heun": 1e-3}.get(method, 1e-6)
    assert torch.allclose(back, torch.tensor([[0.3], [-1.2]], dtype=torch.float64), atol=tol)


def test_unknown_solver_lists_known():
    with pytest.raises(ValueError, match="known"):
        solve(analytic_v, torch.ones(1, 1), method="leapfrog")


# Stated tolerance: a trained toy teacher, inverted then regenerated with RK4 (64 steps) or dopri5
# (rtol = atol = 1e-7; dopri5 controls the error of the whole batch as one system), returns data points to within
# 1e-3 (max abs, float32).
@pytest.mark.parametrize("method", ["rk4", "adaptive"])
def test_inverse_then_forward_on_trained_teacher(toy_teacher, method):
    model, _ = load_checkpoint(toy_teacher)
    from teachers.data import toy_2d

    x1 = toy_2d("eight_gaussians", 256, 1, seed=5).train
    x0 = solve(model, x1, 1.0, 0.0, 64, method, rtol=1e-7, atol=1e-7).x
    assert x0.std() > 0.5  # it did move: data became noise-like
    again = solve(model, x0, 0.0, 1.0, 64, method, rtol=1e-7, atol=1e-7).x
    assert (again - x1).abs().max().item() < 1e-3


def test_straightness_is_zero_for_a_straight_flow_and_grows_with_curvature():
    x0 = torch.randn(64, 3, dtype=torch.float64)
    target = torch.randn(64, 3, dtype=torch.float64)
    assert straightness(lambda x, t: target - x0, x0) < 1e-20  # constant velocity: the trajectory is its chord
    bent = [straightness(lambda x, t, a=a: a * x * torch.cos(4 * t).view(-1, 1), x0) for a in (0.5, 1.0, 2.0)]
    assert 0 < bent[0] < bent[1] < bent[2], bent
