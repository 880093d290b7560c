"""Guide production: couplings that pair noise with data, and guide rules.

Everything a record needs is a pure function of ``(run seed, sample_id)``, the
data and the teachers, so any producer regenerates a block identically: a
block handed out again after an actor died yields the same records.

Couplings (which ``x1`` goes with which ``x0``):
    ``inversion``   draw real ``x1``; ``x0 = Phi_{1->0}(x1)`` with an accurate solver
    ``generated``   draw ``x0``; ``x1 = Phi_{0->1}(x0)`` (classic reflow pairs)
    ``independent`` draw ``x0`` and ``x1`` independently
    ``mixed``       a fixed share of the sample ids (``inversion_share``, by hash) paired by inversion, the rest
                    generated: inversion alone gives at most as many distinct pairs as there are training
                    rows, so its students memorise (``distinct_pairs`` counts them)

Guide rules (control points between ``x0`` and ``x1`` for a path of degree ``n = k + 1``):
    ``euler_step``  ``g_i = x0 + tau_i v_i(x0, 0)``                 (one Euler step to tau_i)
    ``solve``       ``g_i = Phi^{(i)}_{0->tau_i}(x0)``              (teacher i's ODE to tau_i)
    ``tangent``     ``g_1 = x0 + v_1(x0, 0) / n``, ``g_k = x1 - v_k(x1, 1) / n``: the curve leaves ``x0``
                    along teacher 1 and arrives at ``x1`` along teacher k (k = 1 or 2)
    ``trajectory``  the control points that make the curve pass through ``Phi^{(i)}_{0->tau_i}(x0)`` at
                    ``tau_i``: it interpolates the teachers' own trajectories (``solve`` uses those points as
                    control points, which the curve does not pass through); with two teachers each
                    supplies one interior point. A point the coupling's solve passes through (the
                    coupling's teacher, ``tau`` on its grid: rk4 x 9 for 1/3, 2/3) is taken from that
                    solve for free; any other costs a solve to ``tau``, as ``solve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Callable, Sequence

import torch
from torch import Tensor

from teachers.registry import Registry
from teachers.solvers import SOLVERS, nfe_per_step, on_grid, solve

__all__ = [
    "PATHS",
    "COUPLINGS",
    "GUIDE_RULES",
    "CouplingSettings",
    "sample_seed",
    "noise_for",
    "data_for",
    "couple",
    "make_guides",
    "teacher_nfe_per_record",
    "path_degree",
    "through_points",
    "SOLVING_RULES",
    "inverted",
    "distinct_pairs",
    "couple_on_path",
    "coupling_passes",
    "from_coupling",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
# a Bezier path of degree n has n - 1 guide points between x0 and x1
PATHS: Registry[int] = Registry("path", {"linear": 0, "quadratic": 1, "cubic": 2})
_MASK = (1 << 63) - 1


def path_degree(path: str) -> int:
    """Degree ``n`` of a named path (``linear`` 1, ``quadratic`` 2, ``cubic`` 3): its guides plus one."""
    return PATHS[path] + 1


def sample_seed(run_seed: int, sample_id: int, stream: int) -> int:
    """A 63-bit seed for one sample and one use (``stream``), mixed so that nearby ids are unrelated."""
    x = (run_seed * 0x9E3779B97F4A7C15 + sample_id * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & _MASK
    return x ^ (x >> 29)


def noise_for(sample_ids: Tensor, run_seed: int, data_shape: tuple[int, ...]) -> Tensor:
    """``(B, *data_shape)`` standard normal noise, row ``i`` a function of ``(run_seed, sample_ids[i])`` only."""
    g = torch.Generator()
    rows = []
    for sid in sample_ids.tolist():
        g.manual_seed(sample_seed(run_seed, sid, 0))
        rows.append(torch.randn(data_shape, generator=g))
    return torch.stack(rows) if rows else torch.empty((0, *data_shape))


def data_for(sample_ids: Tensor, run_seed: int, data: Tensor) -> Tensor:
    """Real data rows for each sample id: row ``i`` is ``data[h(run_seed, sample_ids[i]) mod N]``."""
    idx = torch.tensor([sample_seed(run_seed, sid, 1) % data.shape[0] for sid in sample_ids.tolist()], dtype=torch.long)
    return data[idx]


@dataclass(frozen=True)
class CouplingSettings:
    """How pairs are made: the coupling and the accurate solver used for inversion or generation."""

    coupling: str = "inversion"
    solver: str = "rk4"
    steps: int = 32
    inversion_share: float = 0.5  # ``mixed`` only

    def __post_init__(self) -> None:
        COUPLINGS.check(self.coupling)


Pair = tuple[Tensor, Tensor, tuple[Tensor, ...]]  # x0, x1 and the coupling solve's states at the times asked


def _inversion(
    ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device,
    at: Sequence[float] = (),
) -> Pair:
    x1 = data_for(ids, run_seed, data).to(device)
    path = solve(teacher, x1, 1.0, 0.0, settings.steps, settings.solver, at=at)
    return path.x, x1, path.points


def _generated(
    ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device,
    at: Sequence[float] = (),
) -> Pair:
    x0 = noise_for(ids, run_seed, tuple(data.shape[1:])).to(device)
    path = solve(teacher, x0, 0.0, 1.0, settings.steps, settings.solver, at=at)
    return x0, path.x, path.points


def _independent(
    ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device,
    at: Sequence[float] = (),
) -> Pair:
    if at:
        raise ValueError("the independent coupling solves nothing, so it has no trajectory points")
    return noise_for(ids, run_seed, tuple(data.shape[1:])).to(device), data_for(ids, run_seed, data).to(device), ()


def inverted(sample_ids: Tensor, run_seed: int, share: float) -> Tensor:
    """Which sample ids the ``mixed`` coupling pairs by inversion: a pure function of the run seed and id."""
    return torch.tensor(
        [sample_seed(run_seed, sid, 2) % 1_000_000 < share * 1_000_000 for sid in sample_ids.tolist()], dtype=torch.bool
    )


def _mixed(
    ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device,
    at: Sequence[float] = (),
) -> Pair:
    mask = inverted(ids, run_seed, settings.inversion_share)
    out: list[Tensor] = []
    for chosen, make in ((mask, _inversion), (~mask, _generated)):
        if not chosen.any():
            continue
        a, b, points = make(ids[chosen], run_seed, data, teacher, settings, device, at)
        if not out:
            # at least fp32: under bf16 autocast a solve's output is bf16 while drawn noise or data is fp32
            out = [
                t.new_empty((len(ids), *t.shape[1:]), dtype=torch.promote_types(t.dtype, torch.float32))
                for t in (a, b, *points)
            ]
        for whole, part in zip(out, (a, b, *points)):
            whole[chosen.to(part.device)] = part.to(whole.dtype)
    return out[0], out[1], tuple(out[2:])


COUPLINGS: Registry[Callable[..., Pair]] = Registry(
    "coupling", {"inversion": _inversion, "generated": _generated, "independent": _independent, "mixed": _mixed}
)


def distinct_pairs(settings: CouplingSettings, run_seed: int, sample_ids: Tensor, n_data: Callable[[], int]) -> int:
    """How many distinct ``(x0, x1)`` pairs these sample ids make: a generated pair is its own; an inverted
    one is fixed by its data row, so inverted ids share the ``n_data()`` training rows (asked only then;
    ``independent`` pairs are all distinct draws)."""
    if settings.coupling in ("generated", "independent"):
        return len(sample_ids)
    rows_in_data = n_data()
    mask = (
        inverted(sample_ids, run_seed, settings.inversion_share)
        if settings.coupling == "mixed"
        else torch.ones(len(sample_ids), dtype=torch.bool)
    )
    rows = {sample_seed(run_seed, sid, 1) % rows_in_data for sid in sample_ids[mask].tolist()}
    return len(rows) + int((~mask).sum())


def couple(
    sample_ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """``(x0, x1)`` for each sample id under the configured coupling; ``teacher`` solves the ODE on ``device``.

    Noise and data rows are drawn on the CPU, so the inputs are the same bits on every device."""
    x0, x1, _ = couple_on_path(sample_ids, run_seed, data, teacher, settings, device)
    return x0, x1


def couple_on_path(
    sample_ids: Tensor,
    run_seed: int,
    data: Tensor,
    teacher: Velocity,
    settings: CouplingSettings,
    device: torch.device | str = "cpu",
    at: Sequence[float] = (),
) -> Pair:
    """``couple`` that also keeps the coupling solve's states at the times ``at`` (each on its grid:
    ``coupling_passes``), in forward time: the teacher's own trajectory points, at no extra cost."""
    return COUPLINGS[settings.coupling](sample_ids, run_seed, data, teacher, settings, device, at)


def coupling_passes(settings: CouplingSettings, t: float) -> bool:
    """Whether the coupling's own solve has a state at time ``t``: it solves (not ``independent``) with a
    fixed-step solver whose grid holds ``t`` (rk4 x 9 holds 1/3 and 2/3; rk4 x 8 does not)."""
    return (
        settings.coupling != "independent"
        and SOLVERS[settings.solver] is not None
        and on_grid(t, 0.0, 1.0, settings.steps)
    )


def _time(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


Known = Sequence[Tensor | None]  # per guide: the teacher's trajectory point at tau when the coupling made it


def _euler_step_guides(
    x0: Tensor, x1: Tensor, teachers: Sequence[Velocity], taus: Sequence[float], solver: str, steps: int, known: Known
) -> list[Tensor]:
    return [x0 + tau * v(x0, _time(x0, 0.0)) for v, tau in zip(teachers, taus)]


def _solve_guides(
    x0: Tensor, x1: Tensor, teachers: Sequence[Velocity], taus: Sequence[float], solver: str, steps: int, known: Known
) -> list[Tensor]:
    return [solve(v, x0, 0.0, tau, steps, solver).x for v, tau in zip(teachers, taus)]


def through_points(x0: Tensor, x1: Tensor, points: Sequence[Tensor], taus: Sequence[float]) -> list[Tensor]:
    """The interior control points of the degree ``k + 1`` Bezier curve from ``x0`` to ``x1`` that passes
    through ``points[i]`` at ``taus[i]`` (``k = len(points)``, distinct taus in (0, 1)): the k x k Bernstein
    system solved once, in float64, and applied to every record."""
    n, k = len(points) + 1, len(points)
    tau = torch.tensor(list(taus), dtype=torch.float64)
    j = torch.arange(1, n, dtype=torch.float64)
    basis = (
        torch.tensor([comb(n, int(i)) for i in j], dtype=torch.float64)
        * tau[:, None] ** j
        * (1 - tau[:, None]) ** (n - j)
    )  # (k, k): row i = interior Bernstein weights at tau_i
    inverse = torch.linalg.inv(basis).to(x0.dtype)
    rhs = [p - (1 - t) ** n * x0 - t**n * x1 for p, t in zip(points, taus)]
    return [sum(inverse[a, i] * rhs[i] for i in range(k)) for a in range(k)]


def _trajectory_guides(
    x0: Tensor, x1: Tensor, teachers: Sequence[Velocity], taus: Sequence[float], solver: str, steps: int, known: Known
) -> list[Tensor]:
    if len(set(taus)) != len(taus):
        raise ValueError(f"the trajectory rule needs distinct guide times, got {list(taus)}")
    points = [
        p if p is not None else solve(v, x0, 0.0, tau, steps, solver).x for v, tau, p in zip(teachers, taus, known)
    ]
    return through_points(x0, x1, points, taus)


def _tangent_guides(
    x0: Tensor, x1: Tensor, teachers: Sequence[Velocity], taus: Sequence[float], solver: str, steps: int, known: Known
) -> list[Tensor]:
    k = len(teachers)
    if k not in (1, 2):
        raise ValueError(f"the tangent rule makes 1 or 2 guides, got {k} teachers")
    n = k + 1
    first = x0 + teachers[0](x0, _time(x0, 0.0)) / n
    if k == 1:
        return [first]
    return [first, x1 - teachers[1](x1, _time(x1, 1.0)) / n]


GUIDE_RULES: Registry[Callable[..., list[Tensor]]] = Registry(
    "guide rule",
    {
        "euler_step": _euler_step_guides,
        "solve": _solve_guides,
        "tangent": _tangent_guides,
        "trajectory": _trajectory_guides,
    },
)


SOLVING_RULES = ("solve", "trajectory")  # rules that solve each teacher's ODE to tau (solve_solver x solve_steps)


def from_coupling(
    coupling: CouplingSettings, rule: str, taus: Sequence[float], coupling_teacher: Sequence[bool]
) -> list[bool]:
    """Which guides take their point from the coupling's own solve: under the ``trajectory`` rule, a guide
    whose teacher is the coupling's (``coupling_teacher[i]``) at a ``tau`` the coupling's grid holds
    (``coupling_passes``). Its point is then at the coupling's solver and steps, and costs nothing."""
    return [
        rule == "trajectory" and same and coupling_passes(coupling, tau) for tau, same in zip(taus, coupling_teacher)
    ]


@torch.no_grad()
def make_guides(
    x0: Tensor,
    x1: Tensor,
    teachers: Sequence[Velocity],
    rule: str,
    taus: Sequence[float],
    solver: str = "euler",
    steps: int = 4,
    known: Known | None = None,
) -> list[Tensor]:
    """One guide per teacher (``teachers[i]`` makes guide ``i + 1`` at ``taus[i]``); shapes ``(B, *D)``.

    ``solver``/``steps`` are used by the ``solve`` and ``trajectory`` rules only; ``known[i]``, where not
    None, is teacher i's trajectory point at ``taus[i]`` already solved (``couple_on_path``), which the
    ``trajectory`` rule uses instead of solving again.
    """
    make = GUIDE_RULES[rule]
    if len(teachers) != len(taus):
        raise ValueError(f"{len(teachers)} teachers but {len(taus)} guide times")
    return make(x0, x1, teachers, taus, solver, steps, known if known is not None else [None] * len(taus))


def teacher_nfe_per_record(
    coupling: CouplingSettings,
    rule: str,
    n_guides: int,
    solve_solver: str = "euler",
    solve_steps: int = 4,
    shared: int = 0,
) -> int | None:
    """Teacher network evaluations one record costs: the coupling's solve plus its guides.

    ``inversion``/``generated`` solve the whole ODE (``steps * nfe_per_step(solver)``), ``independent`` costs
    nothing; ``euler_step`` and ``tangent`` cost one evaluation per guide, ``solve`` and ``trajectory`` a solve to
    ``tau`` per guide, except the ``shared`` guides whose points the coupling's solve made (``from_coupling``).
    ``None`` when a solve is adaptive (its cost depends on the data).
    """
    GUIDE_RULES.check(rule)
    solves = ([coupling.solver] if coupling.coupling != "independent" else []) + (
        [solve_solver] if rule in SOLVING_RULES and n_guides > shared else []
    )
    if any(SOLVERS[s] is None for s in solves):  # adaptive: its cost depends on the data
        return None
    pairing = 0 if coupling.coupling == "independent" else coupling.steps * nfe_per_step(coupling.solver)
    per_guide = solve_steps * nfe_per_step(solve_solver) if rule in SOLVING_RULES else 1
    return pairing + (n_guides - shared) * per_guide
