"""Couplings and guide rules: exact values on analytic teachers, determinism per (run seed, sample id)."""

import math

import pytest
import torch

from student.bezier import bezier_point, bezier_velocity
from teachers.guides import (
    COUPLINGS,
    GUIDE_RULES,
    CouplingSettings,
    couple,
    couple_on_path,
    data_for,
    distinct_pairs,
    from_coupling,
    inverted,
    make_guides,
    noise_for,
    sample_seed,
    teacher_nfe_per_record,
    through_points,
)
from teachers.solvers import solve


def v_lin(x, t):
    """dx/dt = x cos(t) (known flow), a stand-in teacher with an exact answer."""
    return x * torch.cos(t).view(-1, *([1] * (x.dim() - 1)))


def v_const(x, t):
    return torch.ones_like(x) * 2.0


def test_noise_and_data_depend_only_on_seed_and_id():
    ids = torch.arange(100, 164)
    a = noise_for(ids, 7, (1, 8, 8))
    b = noise_for(ids.flip(0), 7, (1, 8, 8)).flip(0)  # another block order, the same rows
    assert torch.equal(a, b)
    assert torch.equal(a[10:20], noise_for(ids[10:20], 7, (1, 8, 8)))
    assert not torch.equal(a, noise_for(ids, 8, (1, 8, 8)))
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1
    data = torch.arange(50.0).view(50, 1)
    assert torch.equal(data_for(ids[:5], 3, data), data_for(ids[:5], 3, data))
    assert len({sample_seed(0, i, 0) for i in range(10_000)}) == 10_000


def test_euler_step_rule_values():
    x0, x1 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    g1, g2 = make_guides(x0, x1, [v_const, v_lin], "euler_step", [1 / 3, 2 / 3])
    assert torch.allclose(g1, x0 + 2.0 / 3)
    assert torch.allclose(g2, x0 + (2 / 3) * x0)  # cos(0) = 1


def test_solve_rule_reaches_the_teacher_flow():
    x0 = torch.randn(4, 2, dtype=torch.float64)
    (g,) = make_guides(x0, x0, [v_lin], "solve", [0.5], solver="rk4", steps=32)
    assert torch.allclose(g, x0 * math.exp(math.sin(0.5)), atol=1e-8)


def test_tangent_rule_matches_teacher_velocities_at_both_ends():
    x0, x1 = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    g1, g2 = make_guides(x0, x1, [v_lin, v_const], "tangent", [1 / 3, 2 / 3])
    pts = [x0, g1, g2, x1]
    assert torch.allclose(bezier_velocity(pts, 0.0), v_lin(x0, torch.zeros(6, dtype=torch.float64)))
    assert torch.allclose(bezier_velocity(pts, 1.0), v_const(x1, torch.ones(6)))
    (q,) = make_guides(x0, x1, [v_lin], "tangent", [0.5])
    assert torch.allclose(bezier_velocity([x0, q, x1], 0.0), x0)


@pytest.mark.parametrize("taus", [[1 / 3, 2 / 3], [0.5], [0.2, 0.7]])
def test_trajectory_rule_passes_through_the_teachers_trajectory(taus):
    x0 = torch.randn(5, 3, dtype=torch.float64)
    x1 = solve(v_lin, x0, 0.0, 1.0, 64, "rk4").x  # the generated coupling's end point
    teachers = [v_lin] * len(taus)
    guides = make_guides(x0, x1, teachers, "trajectory", taus, solver="rk4", steps=32)
    on_path = make_guides(x0, x1, teachers, "solve", taus, solver="rk4", steps=32)
    points = [x0, *guides, x1]
    for tau, point in zip(taus, on_path):
        assert torch.allclose(bezier_point(points, tau), point, atol=1e-10)
        assert torch.allclose(point, x0 * math.exp(math.sin(tau)), atol=1e-8)


def test_trajectory_rule_on_a_straight_flow_gives_the_evenly_spaced_control_points():
    x0, x1 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    straight = lambda x, t: x1 - x0  # noqa: E731 - the chord's constant velocity
    g1, g2 = make_guides(x0, x1, [straight, straight], "trajectory", [1 / 3, 2 / 3], solver="euler", steps=3)
    assert torch.allclose(g1, x0 + (x1 - x0) / 3) and torch.allclose(g2, x0 + 2 * (x1 - x0) / 3)
    with pytest.raises(ValueError, match="distinct guide times"):
        make_guides(x0, x1, [straight, straight], "trajectory", [0.5, 0.5])


def test_couplings():
    data = torch.randn(30, 2, dtype=torch.float64)
    ids = torch.arange(8)
    x0, x1 = couple(ids, 1, data, v_lin, CouplingSettings("inversion", "rk4", 64))
    assert torch.equal(x1, data_for(ids, 1, data))  # the end point is exactly real data
    assert torch.allclose(solve(v_lin, x0, 0.0, 1.0, 64, "rk4").x, x1, atol=1e-9)
    x0g, x1g = couple(ids, 1, data.float(), v_lin, CouplingSettings("generated", "rk4", 64))
    assert torch.allclose(x1g, x0g * math.exp(math.sin(1.0)), atol=1e-5)
    x0i, x1i = couple(ids, 1, data, v_lin, CouplingSettings("independent"))
    assert torch.equal(x0i, noise_for(ids, 1, (2,))) and torch.equal(x1i, data_for(ids, 1, data))


def test_unknown_names_list_known():
    with pytest.raises(ValueError, match="known"):
        CouplingSettings("optimal")
    with pytest.raises(ValueError, match="known"):
        make_guides(torch.zeros(1, 1), torch.zeros(1, 1), [v_lin], "magic", [0.5])
    with pytest.raises(ValueError, match="2 guide times"):
        make_guides(torch.zeros(1, 1), torch.zeros(1, 1), [v_lin], "euler_step", [0.3, 0.6])


def test_solved_guides_lie_on_the_inversion_trajectory(toy_teacher):
    """With inversion coupling and the ``solve`` rule, g_i = Phi(0 -> tau_i)(x0) is on the ODE path from x0 to
    x1: continuing the solve from g_i to t = 1 lands on the real data point. Every solve is dopri5 at
    rtol = atol = 1e-7 (fixed-step RK4 on misaligned grids reached 6e-3 here: the field is stiff near t = 1);
    stated tolerance 1e-3."""
    from teachers.checkpoint import load_checkpoint
    from teachers.data import toy_2d

    model, _ = load_checkpoint(toy_teacher)
    data = toy_2d("eight_gaussians", 512, 1, seed=3).train
    ids = torch.arange(128)
    tight = dict(method="adaptive", rtol=1e-7, atol=1e-7)
    x1 = data_for(ids, 0, data)
    x0 = solve(model, x1, 1.0, 0.0, **tight).x
    taus = [1 / 3, 2 / 3]
    guides = [solve(model, x0, 0.0, tau, **tight).x for tau in taus]
    assert torch.allclose(
        guides[0], make_guides(x0, x1, [model], "solve", [1 / 3], solver="rk4", steps=64)[0], atol=5e-3
    )  # the rule itself is this solve
    for g, tau in zip(guides, taus):
        end = solve(model, g, tau, 1.0, **tight).x
        assert (end - x1).abs().max() < 1e-3
    # the one-Euler-step rule instead follows the teacher's tangent at x0, which for a 1-rectified teacher
    # is E[X1] - x0 (noise and data are independent at t = 0): it points at the data mean, not along the path
    (e1,) = make_guides(x0, x1, [model], "euler_step", [1 / 3])
    toward_mean = x0 + (data.mean(0) - x0) / 3
    assert (e1 - toward_mean).norm(dim=1).mean() < (guides[0] - toward_mean).norm(dim=1).mean()


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("rule", GUIDE_RULES)
@pytest.mark.parametrize("n_guides", [0, 1, 2])
def test_teacher_nfe_per_record_counts_every_teacher_call(coupling, rule, n_guides):
    """The cost the study reports is what producing a record really calls: count the teacher's evaluations per
    record (a call on a part of the batch, as the mixed coupling makes, counts for that part)."""
    calls = [0.0]

    def counting(x, t):
        calls[0] += x.shape[0] / 8
        return v_lin(x, t)

    settings = CouplingSettings(coupling, solver="heun", steps=5)
    ids, data = torch.arange(8), torch.randn(40, 3)
    x0, x1 = couple(ids, 0, data, counting, settings)
    taus = [0.5] if n_guides == 1 else [1 / 3, 2 / 3][:n_guides]
    if n_guides:  # a linear path has no guides, so no rule runs
        make_guides(x0, x1, [counting] * n_guides, rule, taus, solver="rk4", steps=3)
    assert teacher_nfe_per_record(settings, rule, n_guides, solve_solver="rk4", solve_steps=3) == pytest.approx(
        calls[0]
    )


def test_teacher_nfe_per_record_is_unknown_for_adaptive_solves():
    assert teacher_nfe_per_record(CouplingSettings("inversion", "adaptive"), "euler_step", 2) is None
    assert teacher_nfe_per_record(CouplingSettings("independent", "adaptive"), "euler_step", 2) == 2
    assert teacher_nfe_per_record(CouplingSettings("inversion", "rk4", 32), "solve", 1, "adaptive") is None


def test_mixed_coupling_pairs_its_share_by_inversion_and_counts_distinct_pairs():
    data = torch.randn(50, 2, dtype=torch.float64)
    ids = torch.arange(400)
    mixed = CouplingSettings("mixed", solver="rk4", steps=8, inversion_share=0.25)
    x0, x1 = couple(ids, 3, data, v_lin, mixed)
    mask = inverted(ids, 3, 0.25)
    assert 70 < int(mask.sum()) < 130  # about a quarter, by hash
    inv_x0, inv_x1 = couple(ids[mask], 3, data, v_lin, CouplingSettings("inversion", "rk4", 8))
    gen_x0, gen_x1 = couple(ids[~mask], 3, data, v_lin, CouplingSettings("generated", "rk4", 8))
    assert torch.equal(x0[mask].double(), inv_x0) and torch.equal(x1[mask].double(), inv_x1)
    assert torch.allclose(x0[~mask].double(), gen_x0.double()) and torch.allclose(x1[~mask].double(), gen_x1.double())
    # inverted pairs are bounded by the data's 50 rows; generated ones are each their own
    inversion = CouplingSettings("inversion", "rk4", 8)
    rows = lambda: len(data)  # noqa: E731 - asked only for inverted pairs
    assert distinct_pairs(inversion, 3, ids, rows) <= 50
    assert distinct_pairs(CouplingSettings("generated"), 3, ids, rows) == 400
    assert distinct_pairs(mixed, 3, ids, rows) == int((~mask).sum()) + distinct_pairs(inversion, 3, ids[mask], rows)


def test_a_solve_keeps_its_states_on_the_grid_and_refuses_a_time_off_it():
    x = torch.randn(4, 3, dtype=torch.float64)
    whole = solve(v_lin, x, 0.0, 1.0, 9, "rk4", at=[2 / 3, 1 / 3, 0.0])
    assert torch.equal(whole.x, solve(v_lin, x, 0.0, 1.0, 9, "rk4").x) and whole.nfe == 36  # nothing extra
    assert torch.allclose(whole.points[0], solve(v_lin, x, 0.0, 2 / 3, 6, "rk4").x, atol=1e-12)
    assert torch.allclose(whole.points[1], solve(v_lin, x, 0.0, 1 / 3, 3, "rk4").x, atol=1e-12)
    assert torch.equal(whole.points[2], x)
    back = solve(v_lin, x, 1.0, 0.0, 9, "rk4", at=[1 / 3])  # inversion: the grid runs from 1 down to 0
    assert torch.allclose(back.points[0], solve(v_lin, x, 1.0, 1 / 3, 6, "rk4").x, atol=1e-12)
    with pytest.raises(ValueError, match="not on the 8-step grid"):
        solve(v_lin, x, 0.0, 1.0, 8, "rk4", at=[1 / 3])
    with pytest.raises(ValueError, match="adaptive"):
        solve(v_lin, x, 0.0, 1.0, method="adaptive", at=[0.5])


@pytest.mark.parametrize("coupling", ["generated", "inversion", "mixed"])
def test_trajectory_points_from_the_coupling_equal_a_separate_solve_and_cost_nothing(coupling):
    """The coupling's rk4 x 9 solve passes through 1/3 and 2/3: its states there are the trajectory rule's
    points (up to rounding), and the guides made from them cost no teacher call beyond the coupling's."""
    calls = [0]

    def counting(x, t):
        calls[0] += 1
        return v_lin(x, t)

    settings = CouplingSettings(coupling, "rk4", 9, inversion_share=0.5)
    ids, data, taus = torch.arange(16), torch.randn(30, 3, dtype=torch.float64), [1 / 3, 2 / 3]
    shared = from_coupling(settings, "trajectory", taus, [True, True])
    assert shared == [True, True]
    x0, x1, points = couple_on_path(ids, 2, data, counting, settings, at=taus)
    before = calls[0]
    free = make_guides(x0, x1, [counting, counting], "trajectory", taus, "rk4", 3, known=list(points))
    assert calls[0] == before  # no solve for a known point
    # the same step size as the coupling's: rk4 x 3 to 1/3, x 6 to 2/3
    solved = through_points(
        x0, x1, [solve(v_lin, x0, 0.0, 1 / 3, 3, "rk4").x, solve(v_lin, x0, 0.0, 2 / 3, 6, "rk4").x], taus
    )
    # inverted rows' points lie on the backward solve's path, which the forward one matches to rk4's error
    tol = 1e-6 if coupling == "generated" else 1e-4
    for a, b in zip(free, solved):
        assert torch.allclose(a, b, atol=tol)
    assert teacher_nfe_per_record(settings, "trajectory", 2, "rk4", 3, shared=sum(shared)) == 36


def test_only_the_coupling_teacher_at_a_grid_time_is_taken_from_the_coupling():
    taus = [1 / 3, 2 / 3]
    rk4x9 = CouplingSettings("generated", "rk4", 9)
    assert from_coupling(rk4x9, "trajectory", taus, [True, False]) == [True, False]  # a second teacher solves
    assert from_coupling(rk4x9, "solve", taus, [True, True]) == [False, False]  # solve keeps its own solver
    assert from_coupling(CouplingSettings("generated", "rk4", 8), "trajectory", taus, [True, True]) == [False, False]
    assert from_coupling(CouplingSettings("independent"), "trajectory", taus, [True, True]) == [False, False]
    assert from_coupling(CouplingSettings("generated", "adaptive"), "trajectory", taus, [True, True]) == [False] * 2
    # with one free guide, the record costs the coupling plus one solve to tau
    assert teacher_nfe_per_record(rk4x9, "trajectory", 2, "rk4", 3, shared=1) == 36 + 12


@pytest.mark.parametrize("coupling_steps,solves", [(9, 0), (8, 2)])
def test_an_actors_trajectory_block_passes_through_the_teachers_path(toy_teacher, tmp_path, coupling_steps, solves):
    """What a teacher actor builds (``build_block``) under ``guides.rule: trajectory``: each record's cubic
    passes through the teacher's own trajectory at 1/3 and 2/3, taken from the rk4 x 9 coupling solve (no
    guide solve), or solved separately (rk4 x 3 to each tau) when the coupling's grid misses them."""
    from student.bezier import bezier_point
    from teachers.checkpoint import load_checkpoint
    from cluster.config import parse_config
    from teachers.teacher_actor import build_block, load_teachers
    from teachers.train_teacher import load_run_data

    cfg = parse_config(
        {
            "name": "traj",
            "seed": 4,
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 4000, "n_held_out": 1000},
            "teacher": {"network": {"arch": "mlp", "hidden": 64, "depth": 2, "time_embed_dim": 32}},
            "guides": {
                "path": "cubic",
                "rule": "trajectory",
                "coupling": "generated",
                "coupling_solver": "rk4",
                "coupling_steps": coupling_steps,
                "solve_solver": "rk4",
                "solve_steps": 3,
                "block_size": 32,
                "num_samples": 64,
            },
            "teachers": [{"name": "t", "checkpoints": [str(toy_teacher)]}],
        }
    )
    assert cfg.teacher_pool[0].guides_from_coupling(cfg.guides) == [solves == 0] * 2
    teachers = load_teachers(cfg.teacher_pool[0], 2, (2,))
    calls = [0]
    net = teachers.coupling

    def counting(x, t):
        calls[0] += 1
        return net(x, t)

    teachers.coupling, teachers.guides = counting, [counting, counting]  # one teacher, as loaded
    batch = build_block(cfg, load_run_data(cfg.data, cfg.seed).train, teachers, 1, "test")
    assert calls[0] == coupling_steps * 4 + solves * 3 * 4  # rk4: 4 calls a step
    model, _ = load_checkpoint(toy_teacher)
    points = [batch.x0, *batch.guides, batch.x1]
    for tau in (1 / 3, 2 / 3):
        steps = 3 if solves else round(tau * 9)  # the guide solve's steps, or the coupling's grid up to tau
        on_path = solve(model, batch.x0, 0.0, tau, steps, "rk4").x
        assert torch.allclose(bezier_point(points, torch.full((32,), tau)), on_path, atol=1e-5)


def test_guides_precision_runs_the_actors_teachers_in_bf16_and_only_them(toy_teacher, tmp_path):
    """``guides.precision: bf16`` (twice the teacher throughput on a CPU with bf16 units): the actors' teachers
    run under bf16 autocast while the run stays fp32; the records stay fp32 and near the fp32 ones."""
    from cluster.config import parse_config
    from teachers.teacher_actor import build_block, load_placed_teachers
    from teachers.train_teacher import load_run_data

    def cfg(precision):
        return parse_config(
            {
                "name": "prec",
                "seed": 1,
                "run_dir": str(tmp_path),
                "data": {"name": "eight_gaussians", "n_train": 4000, "n_held_out": 1000},
                "teacher": {"network": {"arch": "mlp", "hidden": 64, "depth": 2, "time_embed_dim": 32}},
                "guides": {
                    "path": "quadratic",
                    "coupling": "generated",
                    "coupling_steps": 8,
                    "block_size": 32,
                    "num_samples": 64,
                    "precision": precision,
                },
                "teachers": [{"name": "t", "checkpoints": [str(toy_teacher)]}],
            }
        )

    blocks = {}
    for precision in ("auto", "bf16"):
        c = cfg(precision)
        teachers = load_placed_teachers(c, c.teacher_pool[0], (2,))
        assert teachers.precision == ("fp32" if precision == "auto" else "bf16")
        blocks[precision] = build_block(c, load_run_data(c.data, c.seed).train, teachers, 0, "test")
    fp32, bf16 = blocks["auto"], blocks["bf16"]
    assert bf16.x1.dtype == torch.float32 and torch.equal(bf16.x0, fp32.x0)  # the same noise
    assert not torch.equal(bf16.x1, fp32.x1) and (bf16.x1 - fp32.x1).abs().max() < 0.1
