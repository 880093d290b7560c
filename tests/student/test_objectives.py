"""Student objectives, networks, samplers and the replay pool: exact values, no cluster."""

import pytest
import torch
from torch import nn

from student.bezier import bezier_point
from student.networks import build_student, init_from_teacher
from student.objectives import (
    OBJECTIVES,
    ObjectiveSettings,
    flow_map_loss,
    flow_map_sampler,
    flow_map_step,
    objective_loss,
    sample_flow_map_times,
    student_sampler,
    velocity_loss,
    velocity_sampler,
)
from student.replay import ReplayPool
from teachers.guides import path_degree
from teachers.nets import build_network
from teachers.rectified_flow import rectified_flow_loss


class Affine(nn.Module):
    """``v(x, t) = a x + b t`` (or ``f(x, s, t) = a x + b s + c t``): losses computable by hand."""

    def __init__(self, a=0.5, b=1.0, c=0.0):
        super().__init__()
        self.a, self.b, self.c = nn.Parameter(torch.tensor(a)), nn.Parameter(torch.tensor(b)), c

    def forward(self, x, *times):
        t0 = times[0].view(-1, *([1] * (x.dim() - 1)))
        out = self.a * x + self.b * t0
        if len(times) == 2:
            out = out + self.c * times[1].view_as(t0)
        return out


def test_velocity_loss_cubic_by_hand():
    # one record, scalar data: P = (0, 1, 3, 2) at t = 1/2
    pts = [torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]), torch.tensor([[2.0]])]
    t = torch.tensor([0.5])
    b = 0.125 * 0 + 0.375 * 1 + 0.375 * 3 + 0.125 * 2  # = 1.75
    db = 3 * 0.25 * (1 - 0) + 6 * 0.25 * (3 - 1) + 3 * 0.25 * (2 - 3)  # = 0.75 + 3 - 0.75 = 3
    pred = 0.5 * b + 1.0 * 0.5
    assert velocity_loss(Affine(), pts, t).item() == pytest.approx((pred - db) ** 2)


def test_flow_map_loss_by_hand_and_on_the_diagonal():
    pts = [torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.tensor([[1.0]])]  # quadratic
    model = Affine(a=0.0, b=1.0, c=2.0)
    s, t = torch.tensor([0.25]), torch.tensor([0.75])
    b = lambda u: 2 * u * (1 - u) * 2 + u * u * 1  # noqa: E731
    target = (b(0.75) - b(0.25)) / 0.5
    pred = 1.0 * 0.25 + 2.0 * 0.75
    assert flow_map_loss(model, pts, s, t).item() == pytest.approx((pred - target) ** 2)
    # s == t: the target is B'(s) = 2(1-s)(G - x0) + 2s(x1 - G)
    s = t = torch.tensor([0.25])
    deriv = 2 * 0.75 * 2 + 2 * 0.25 * (1 - 2)
    assert flow_map_loss(model, pts, s, t).item() == pytest.approx((0.25 + 0.5 - deriv) ** 2)


def test_linear_path_is_rectified_flow_distillation():
    g = torch.Generator().manual_seed(0)
    x0, x1, t = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g), torch.rand(32, generator=g)
    model = build_network("mlp", (2,), hidden=32, depth=1, time_embed_dim=8)
    assert velocity_loss(model, [x0, x1], t).item() == pytest.approx(
        rectified_flow_loss(model, x0, x1, t).item(), rel=1e-6
    )


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("path", ["linear", "quadratic", "cubic"])
def test_gradients_reach_every_parameter(objective, path):
    torch.manual_seed(0)
    model = build_student("mlp", (2,), {"hidden": 16, "depth": 1, "time_embed_dim": 8}, objective)
    pts = [torch.randn(16, 2) for _ in range(path_degree(path) + 1)]
    loss = objective_loss(model, pts, ObjectiveSettings(objective), torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


class _ConstantMap(nn.Module):
    """``f(x, s, t) = c``: a flow map that composes exactly (two half jumps equal one jump)."""

    def __init__(self, c: torch.Tensor, bend: float = 0.0):
        super().__init__()
        self.c, self.bend = nn.Parameter(c), bend

    def forward(self, x, s, t):
        return self.c + self.bend * x * (t - s).view(-1, 1)  # bend != 0: half jumps disagree with one jump


@pytest.mark.parametrize("objective", ["flow_map_shortcut", "flow_map_tri", "flow_map_forward"])
def test_a_consistency_term_adds_nothing_for_a_consistent_map_and_penalises_an_inconsistent_one(objective):
    pts = [torch.randn(64, 2, dtype=torch.float64) for _ in range(4)]
    for bend, consistent in ((0.0, True), (1.5, False)):
        model = _ConstantMap(torch.randn(2, dtype=torch.float64), bend)
        plain = objective_loss(model, pts, ObjectiveSettings("flow_map"), torch.Generator().manual_seed(3))
        shortcut = objective_loss(
            model, pts, ObjectiveSettings(objective, consistency_weight=2.0), torch.Generator().manual_seed(3)
        )
        unweighted = objective_loss(
            model, pts, ObjectiveSettings(objective, consistency_weight=0.0), torch.Generator().manual_seed(3)
        )
        assert torch.allclose(unweighted, plain)
        assert torch.allclose(shortcut, plain) if consistent else shortcut > plain + 1e-3, (bend, shortcut, plain)


def test_flow_map_times_shares():
    s, t = sample_flow_map_times(
        20000, ObjectiveSettings(endpoint_share=0.3, diagonal_share=0.2), torch.Generator().manual_seed(0)
    )
    assert bool((s <= t).all()) and bool(((s >= 0) & (t <= 1)).all())
    ends = ((s == 0) & (t == 1)).float().mean().item()
    diag = (s == t).float().mean().item()
    assert ends == pytest.approx(0.3, abs=0.02) and diag == pytest.approx(0.2, abs=0.02)


def test_grid_share_draws_the_samplers_own_jumps():
    settings = ObjectiveSettings(endpoint_share=0.2, diagonal_share=0.1, grid_share=0.4, grid_steps=(2, 4))
    s, t = sample_flow_map_times(40000, settings, torch.Generator().manual_seed(1))
    jumps = {(0.0, 0.5), (0.5, 1.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)}
    pairs = list(zip(s.tolist(), t.tolist()))
    share = {jump: sum(p == jump for p in pairs) / len(pairs) for jump in jumps}
    # half the grid rows on each grid, spread evenly over its jumps (random pairs almost never hit one exactly)
    for (a, b), got in share.items():
        assert got == pytest.approx(0.4 / 2 / (2 if b - a == 0.5 else 4), abs=0.012), (a, b, got)
    assert ((s == 0) & (t == 1)).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert (s == t).float().mean().item() == pytest.approx(0.1, abs=0.01)
    unchanged = sample_flow_map_times(1000, ObjectiveSettings(), torch.Generator().manual_seed(2))
    assert not any(p in jumps for p in zip(*(x.tolist() for x in unchanged)))  # grid_share 0: no grid rows


def test_unknown_names_are_listed():
    with pytest.raises(ValueError, match="unknown objective 'score'; known: velocity, flow_map"):
        objective_loss(Affine(), [torch.zeros(1, 1)] * 2, ObjectiveSettings("score"), torch.Generator())
    with pytest.raises(ValueError, match="unknown path 'quartic'; known: linear, quadratic, cubic"):
        path_degree("quartic")


def test_flow_map_fitted_to_a_curve_is_exact_in_one_step():
    # a flow map that is exact for the path (x0, g, x1) = (x0, x0 + 1, 2 x0 + 3): quadratic in t, affine in x0
    x0 = torch.randn(64, 1)
    pts = [x0, x0 + 1, 2 * x0 + 3]

    class Exact(nn.Module):
        def forward(self, x, s, t):
            # invert B(s) = x0 (1 + s^2) + 2 s + s^2 ... then average velocity to t
            s, t = s.view(-1, 1), t.view(-1, 1)
            x0_ = (x - 2 * s * (1 - s) - 3 * s * s) / ((1 - s) ** 2 + 2 * s * (1 - s) + 2 * s * s)
            end = bezier_point([x0_, x0_ + 1, 2 * x0_ + 3], t.view(-1))
            return (end - x) / (t - s)

    one = flow_map_sampler(Exact())(x0, 1).x
    four = flow_map_sampler(Exact())(x0, 4).x
    assert torch.allclose(one, 2 * x0 + 3, atol=1e-5) and torch.allclose(four, 2 * x0 + 3, atol=1e-4)
    assert torch.allclose(flow_map_step(Exact(), x0, 0.0, 0.5), bezier_point(pts, 0.5), atol=1e-5)


def test_velocity_sampler_is_euler_on_the_student():
    model = Affine(a=0.0, b=2.0)  # v = 2t: x(1) = x0 + 1 exactly; Euler with k steps gives x0 + 1 - 1/k
    x0 = torch.zeros(3, 2)
    for k in (1, 2, 4):
        sol = velocity_sampler(model)(x0, k)
        assert sol.nfe == k and torch.allclose(sol.x, torch.full_like(x0, 1 - 1 / k))
    with pytest.raises(ValueError, match="known"):
        student_sampler("nope", model)


@pytest.mark.parametrize(
    "arch,shape,kwargs",
    [
        ("mlp", (2,), {"hidden": 16, "depth": 2, "time_embed_dim": 8}),
        ("unet", (1, 8, 8), {"channels": 8, "time_embed_dim": 16}),
    ],
)
def test_flow_map_student_from_teacher_starts_as_one_euler_step(arch, shape, kwargs):
    torch.manual_seed(0)
    teacher = build_network(arch, shape, **kwargs)
    for objective in ("velocity", "flow_map"):
        student = build_student(arch, shape, kwargs, objective)
        init_from_teacher(student, teacher)
        x = torch.randn(5, *shape)
        euler = x + teacher(x, torch.zeros(5))
        one = student_sampler(objective, student)(x, 1).x
        assert torch.allclose(one, euler, atol=1e-5)
    with pytest.raises(ValueError, match="student"):
        init_from_teacher(build_student(arch, shape, {**kwargs, "time_embed_dim": 32}, "velocity"), teacher)


def test_replay_pool_bounds_reuse_and_overwrites_oldest():
    pool = ReplayPool(capacity=10, max_reuse=2.0)
    g = torch.Generator().manual_seed(0)
    assert not pool.can_draw(1)
    pool.add([torch.arange(6.0).view(6, 1), -torch.arange(6.0).view(6, 1)])
    assert pool.size == 6 and pool.can_draw(12) and not pool.can_draw(13)
    x0, x1 = pool.draw(12, g)
    assert torch.equal(x1, -x0) and not pool.can_draw(1)
    pool.add([torch.arange(6.0, 12.0).view(6, 1), -torch.arange(6.0, 12.0).view(6, 1)])
    assert pool.size == 10 and pool.received == 12
    x0, _ = pool.draw(200, g)
    assert set(x0.view(-1).tolist()) == set(range(2, 12))  # records 0 and 1 were overwritten
    with pytest.raises(ValueError, match="layout"):
        pool.add([torch.zeros(2, 3)] * 2)


def test_replay_pool_state_round_trip():
    pool = ReplayPool(capacity=8, max_reuse=4.0)
    pool.add([torch.arange(10.0).view(10, 1), torch.zeros(10, 1)])
    pool.draw(5, torch.Generator().manual_seed(0))
    tensors, meta = pool.state()
    back = ReplayPool(capacity=8, max_reuse=4.0)
    back.load_state(tensors, meta)
    assert (back.size, back.received, back.used) == (8, 10, 5)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(pool.draw(20, g1), back.draw(20, g2)))
    back.add([torch.full((1, 1), 99.0), torch.zeros(1, 1)])  # overwrites the oldest (id 2), as the original would
    pool.add([torch.full((1, 1), 99.0), torch.zeros(1, 1)])
    assert torch.equal(pool.state()[0]["rows"], back.state()[0]["rows"])


def test_meanflow_term_vanishes_on_the_flow_map_of_the_field_and_penalises_another():
    """On parallel straight paths ``x1 = x0 + c`` the field is ``c`` everywhere and its flow map's average
    velocity is ``c`` for every ``(x, s, t)``: the constant map ``c`` has zero loss, and the term adds
    nothing. A map that bends (half jumps disagree with one jump) is penalised beyond the regression, by
    exactly the term written out by hand: one small step ``h`` along the path, then the map itself."""
    c = torch.tensor([0.7, -1.2], dtype=torch.float64)
    x0 = torch.randn(64, 2, dtype=torch.float64)
    pts = [x0, x0 + c]
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731 - the same times for each loss
    settings = ObjectiveSettings("flow_map_meanflow", consistency_weight=0.5, consistency_h=0.05)
    exact = objective_loss(_ConstantMap(c.clone()), pts, settings, g())
    assert exact.item() == pytest.approx(0.0, abs=1e-12)  # the target is formed in fp32
    bent = _ConstantMap(c.clone(), bend=1.5)
    plain = objective_loss(bent, pts, ObjectiveSettings("flow_map"), g())
    off = objective_loss(bent, pts, ObjectiveSettings("flow_map_meanflow", consistency_weight=0.0), g())
    on = objective_loss(bent, pts, settings, g())
    assert torch.allclose(off, plain) and on > plain + 1e-3
    s, t = sample_flow_map_times(64, settings, g())
    h = torch.clamp(t - s, max=0.05)
    x = x0 + s[:, None] * c
    with torch.no_grad():
        later = bent(x + h[:, None] * c, s + h, t)
        ratio = torch.where(t > s, h / (t - s).clamp(min=1e-12), torch.ones_like(s))[:, None]
        term = (bent(x, s, t) - (ratio * c + (1 - ratio) * later)).pow(2).mean()
    assert on.item() == pytest.approx(plain.item() + 0.5 * term.item(), rel=1e-5)


def test_tri_and_forward_terms_are_the_two_jumps_written_out():
    """The tri term at its random interior point and the forward term's last Euler step of the student's own
    velocity, computed by hand from the same draws, are what the objectives add to the regression."""
    pts = [torch.randn(32, 2, dtype=torch.float64) for _ in range(4)]
    bent = _ConstantMap(torch.randn(2, dtype=torch.float64), bend=0.8)
    settings = ObjectiveSettings("flow_map_tri", consistency_weight=0.5, consistency_h=0.1)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731 - the same draws for each
    plain = objective_loss(bent, pts, ObjectiveSettings("flow_map"), g())
    gen = g()
    s, t = sample_flow_map_times(32, settings, gen)
    r = torch.rand(32, generator=gen).double()
    s, t = s.double(), t.double()
    x = bezier_point(pts, s)
    with torch.no_grad():
        pred = bent(x, s, t)
        for objective, u, last, w in (
            ("flow_map_tri", s + r * (t - s), None, r),
            ("flow_map_forward", t - torch.clamp(t - s, max=0.1), "u", None),
        ):
            if w is None:
                w = torch.where(t > s, (u - s) / (t - s).clamp(min=1e-12), torch.zeros_like(s))
            first = bent(x, s, u)
            second = bent(x + (u - s)[:, None] * first, u, u if last == "u" else t)
            goal = w[:, None] * first + (1 - w)[:, None] * second
            term = (pred - goal).pow(2).mean()
            got = objective_loss(
                bent, pts, ObjectiveSettings(objective, consistency_weight=0.5, consistency_h=0.1), g()
            )
            assert got.item() == pytest.approx(plain.item() + 0.5 * term.item(), rel=1e-9), objective
            assert term.item() > 1e-4


def test_consistency_share_puts_the_term_on_the_first_rows_only():
    """With ``consistency_share`` 0.25 the tri term is the hand-written one over the batch's first 8 of 32 rows
    (the regression still over all 32), and the target's forward passes see those 8 rows only."""
    pts = [torch.randn(32, 2, dtype=torch.float64) for _ in range(4)]
    bent = _ConstantMap(torch.randn(2, dtype=torch.float64), bend=0.8)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731 - the same draws for each
    settings = ObjectiveSettings("flow_map_tri", consistency_weight=0.5, consistency_share=0.25)
    plain = objective_loss(bent, pts, ObjectiveSettings("flow_map"), g())
    gen = g()
    s, t = sample_flow_map_times(32, settings, gen)
    r = torch.rand(32, generator=gen).double()
    s, t, r = s.double()[:8], t.double()[:8], r[:8]
    x = bezier_point([p[:8] for p in pts], s)
    with torch.no_grad():
        u = s + r * (t - s)
        first = bent(x, s, u)
        goal = r[:, None] * first + (1 - r)[:, None] * bent(x + (u - s)[:, None] * first, u, t)
        term = (bent(x, s, t) - goal).pow(2).mean()
    seen = []
    counting = _ConstantMap(bent.c.detach().clone(), bend=0.8)
    counting.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    got = objective_loss(counting, pts, settings, g())
    assert got.item() == pytest.approx(plain.item() + 0.5 * term.item(), rel=1e-9)
    assert seen == [32, 8, 8]


@pytest.mark.parametrize("objective", ["flow_map_shortcut", "flow_map_meanflow"])
def test_objectives_without_a_draw_keep_the_time_stream(objective):
    """Only tri draws its interior point: the other consistency objectives leave the generator where the
    regression leaves it (so their runs are what they were before tri existed)."""
    pts = [torch.randn(16, 2) for _ in range(4)]
    model = _ConstantMap(torch.randn(2), bend=0.5)
    for name, moved in ((objective, False), ("flow_map_tri", True)):
        g, ref = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        objective_loss(model, pts, ObjectiveSettings(name), g)
        sample_flow_map_times(16, ObjectiveSettings(name), ref)
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=ref)) != moved, name


def test_tri_and_forward_targets_vanish_on_the_exact_flow_map_of_a_linear_field():
    """For dx/dt = a x the flow map is x e^{a (t - s)}: its average velocity f = x (e^{a (t-s)} - 1) / (t - s)
    composes exactly, so the tri term is zero up to rounding; the forward term's Euler step is exact to
    O(h^2), so it is small and shrinks faster than an O(h) error would when h halves."""

    class Exact(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

        def forward(self, x, s, t):
            d = (t - s).view(-1, 1)
            safe = torch.where(d > 0, d, torch.ones_like(d))
            return torch.where(d > 0, x * torch.expm1(self.a * safe) / safe, self.a * x)

    x0 = torch.randn(256, 2, dtype=torch.float64)
    pts = [x0, x0 * torch.exp(torch.tensor(0.8, dtype=torch.float64))]  # a straight "path"; only the map matters
    plain = objective_loss(Exact(0.8), pts, ObjectiveSettings("flow_map"), torch.Generator().manual_seed(2))
    tri = objective_loss(
        Exact(0.8), pts, ObjectiveSettings("flow_map_tri", consistency_weight=1.0), torch.Generator().manual_seed(2)
    )
    assert tri.item() == pytest.approx(plain.item(), rel=1e-9, abs=1e-12)
    terms = []
    for h in (0.04, 0.02):
        settings = ObjectiveSettings("flow_map_forward", consistency_weight=1.0, consistency_h=h)
        on = objective_loss(Exact(0.8), pts, settings, torch.Generator().manual_seed(2))
        terms.append(on.item() - plain.item())
    # the squared error of an O(h^2) step goes as h^4 (16-fold per halving; pairs with t - s < h take the whole
    # gap as their step and do not shrink, so less); an O(h) error would shrink 4-fold (measured: 8.8-fold)
    assert 0 < terms[1] < terms[0] / 6
