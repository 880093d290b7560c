"""Exact Bezier math: endpoints, derivatives, degree elevation, flow-map targets."""

from math import comb

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from student.bezier import bezier_point, bezier_velocity, elevate_degree, flow_map_target, flow_map_velocity

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _points(degree, batch, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *shape), generator=g, dtype=torch.float64).to(dtype) for _ in range(degree + 1)]


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-9}


@settings(max_examples=60, deadline=None)
@given(degree=st.integers(1, 5), batch=st.integers(1, 5), shape=shapes, dtype=dtypes, seed=st.integers(0, 10**6))
def test_endpoints_are_noise_and_data(degree, batch, shape, dtype, seed):
    pts = _points(degree, batch, shape, dtype, seed)
    assert torch.allclose(bezier_point(pts, torch.zeros(batch, dtype=dtype)), pts[0], **_tol(dtype))
    assert torch.allclose(bezier_point(pts, torch.ones(batch, dtype=dtype)), pts[-1], **_tol(dtype))
    # the velocity at the ends points along the first and last legs
    assert torch.allclose(bezier_velocity(pts, 0.0), degree * (pts[1] - pts[0]), **_tol(dtype))
    assert torch.allclose(bezier_velocity(pts, 1.0), degree * (pts[-1] - pts[-2]), **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(degree=st.integers(1, 5), batch=st.integers(1, 4), shape=shapes, seed=st.integers(0, 10**6))
def test_velocity_matches_central_difference(degree, batch, shape, seed):
    pts = _points(degree, batch, shape, torch.float64, seed)
    t = torch.rand(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.98 + 0.01
    h = 1e-6
    fd = (bezier_point(pts, t + h) - bezier_point(pts, t - h)) / (2 * h)
    assert torch.allclose(bezier_velocity(pts, t), fd, atol=1e-6, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 5), shape=shapes, dtype=dtypes, seed=st.integers(0, 10**6))
def test_line_written_as_cubic_is_the_line(batch, shape, dtype, seed):
    line = _points(1, batch, shape, dtype, seed)
    cubic = elevate_degree(elevate_degree(line))
    assert len(cubic) == 4
    # interior control points at 1/3 and 2/3 of the segment
    assert torch.allclose(cubic[1], line[0] + (line[1] - line[0]) / 3, **_tol(dtype))
    t = torch.linspace(0, 1, batch, dtype=dtype)
    assert torch.allclose(bezier_point(cubic, t), bezier_point(line, t), **_tol(dtype))
    assert torch.allclose(bezier_velocity(cubic, t), line[1] - line[0], **_tol(dtype))


@settings(max_examples=40, deadline=None)
@given(degree=st.integers(1, 4), batch=st.integers(1, 5), shape=shapes, seed=st.integers(0, 10**6))
def test_degree_elevation_keeps_the_curve(degree, batch, shape, seed):
    pts = _points(degree, batch, shape, torch.float64, seed)
    t = torch.rand(batch, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    up = elevate_degree(pts)
    assert torch.allclose(bezier_point(up, t), bezier_point(pts, t), atol=1e-12)
    assert torch.allclose(bezier_velocity(up, t), bezier_velocity(pts, t), atol=1e-11)


def test_quadratic_and_cubic_match_design_formulas():
    g = torch.Generator().manual_seed(3)
    x0, g1, g2, x1 = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(4))
    t = torch.rand(7, generator=g, dtype=torch.float64)[:, None]
    quad_b = (1 - t) ** 2 * x0 + 2 * t * (1 - t) * g1 + t**2 * x1
    quad_v = 2 * (1 - t) * (g1 - x0) + 2 * t * (x1 - g1)
    assert torch.allclose(bezier_point([x0, g1, x1], t[:, 0]), quad_b)
    assert torch.allclose(bezier_velocity([x0, g1, x1], t[:, 0]), quad_v)
    cub_b = (1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * g1 + 3 * (1 - t) * t**2 * g2 + t**3 * x1
    cub_v = 3 * (1 - t) ** 2 * (g1 - x0) + 6 * t * (1 - t) * (g2 - g1) + 3 * t**2 * (x1 - g2)
    assert torch.allclose(bezier_point([x0, g1, g2, x1], t[:, 0]), cub_b)
    assert torch.allclose(bezier_velocity([x0, g1, g2, x1], t[:, 0]), cub_v)


def test_hand_computed_values():
    # cubic with scalar control points 0, 1, 3, 2 at t = 1/2: B = (0 + 3 + 9 + 2) / 8, B' = 3/4 (1 + 2*2 - 1)
    pts = [torch.tensor([[v]], dtype=torch.float64) for v in (0.0, 1.0, 3.0, 2.0)]
    assert bezier_point(pts, 0.5).item() == pytest.approx(14 / 8)
    assert bezier_velocity(pts, 0.5).item() == pytest.approx(0.75 * (1 + 4 - 1))
    assert sum(comb(3, k) for k in range(4)) == 8


@settings(max_examples=40, deadline=None)
@given(degree=st.integers(1, 4), batch=st.integers(1, 5), shape=shapes, seed=st.integers(0, 10**6))
def test_flow_map_targets_compose(degree, batch, shape, seed):
    pts = _points(degree, batch, shape, torch.float64, seed)
    s, t, u = torch.sort(
        torch.rand(3, batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 0
    ).values
    b_s, b_t = flow_map_target(pts, s, t)
    b_t2, b_u = flow_map_target(pts, t, u)
    b_s3, b_u3 = flow_map_target(pts, s, u)
    assert torch.equal(b_t, b_t2) and torch.equal(b_s, b_s3) and torch.equal(b_u, b_u3)
    # the map x + (t - s) f with f the average velocity lands exactly on the target, and composes
    f_st, f_tu, f_su = flow_map_velocity(pts, s, t), flow_map_velocity(pts, t, u), flow_map_velocity(pts, s, u)
    w = lambda a, b: (b - a).view(-1, *([1] * len(shape)))
    step_two = (b_s + w(s, t) * f_st) + w(t, u) * f_tu
    assert torch.allclose(step_two, b_s + w(s, u) * f_su, atol=1e-9)
    assert torch.allclose(step_two, b_u, atol=1e-9)


def test_flow_map_velocity_tends_to_velocity():
    pts = _points(3, 4, (2,), torch.float64, 5)
    s = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    assert torch.allclose(flow_map_velocity(pts, s, s), bezier_velocity(pts, s))
    near = flow_map_velocity(pts, s, s + 1e-7)
    assert torch.allclose(near, bezier_velocity(pts, s), atol=1e-5)


def test_bad_inputs_raise():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="at least 2"):
        bezier_point([a], 0.5)
    with pytest.raises(ValueError, match="shape"):
        bezier_point([a, torch.zeros(2, 4)], 0.5)
    with pytest.raises(ValueError, match="batch"):
        bezier_velocity([a, a], torch.zeros(3))
