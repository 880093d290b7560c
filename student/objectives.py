"""The student's objectives on a Bezier path (``student.bezier``). Pure torch: no Ray, Redis or DeepSpeed.

An objective is one entry of ``OBJECTIVES``: its loss, how many times its network takes, and the sampler
that matches how it was trained (every sampler: ``(noise (N, *D), steps) -> Solution``, ``steps`` network
evaluations). A new objective is one loss, one sampler and its line there.

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
- ``flow_map_shortcut``: ``flow_map`` plus ``consistency_weight`` times a
  self-consistency term (shortcut models; the ODE-distillation notes' flow-map
  composition ``Phi(x, s, t) = Phi(Phi(x, s, u), u, t)``): with ``u`` the
  midpoint, ``f(x, s, t)`` is pulled toward the average of the two half jumps,
  ``(f(x, s, u) + f(Phi(x, s, u), u, t)) / 2``, computed without gradient. The
  regression alone learns, at interior ``s``, the mean chord of the guide paths
  through ``B(s)``, which need not compose; the term makes few-step maps agree
  with many-step ones. Cost: two more forward passes (no backward) per step.
- ``flow_map_meanflow``: ``flow_map`` plus ``consistency_weight`` times the
  MeanFlow identity in a finite-difference form. The map is constant along the
  flow: ``d/ds Phi(x_s, s, t) = 0`` gives ``f = v + (t - s) df/ds`` (MeanFlow's
  average-velocity target, whose ``df/ds`` is a Jacobian-vector product). Here
  that derivative is one small step ``h = min(consistency_h, t - s)``: ``f(x, s,
  t)`` is pulled toward ``(h v + (t - s - h) f(x + h v, s + h, t)) / (t - s)``,
  without gradient, with ``v = B'(s)`` the path's velocity (its mean over the
  paths through ``x`` is the marginal velocity, and the target is linear in
  ``v``). No JVP, so nothing special under DeepSpeed, ZeRO or bf16 (the target is
  formed in fp32 and never divides by ``h``); cost: one more forward pass (no
  backward) per step. On the linear path the regression alone learns, at
  ``s > 0``, one Euler step of the marginal field (crossing chords average),
  so two steps are not the teacher's map; the term asks for the marginal
  field's flow map, which carries the marginal from ``s`` to ``t``.
- ``flow_map_tri``: ``flow_map`` plus ``consistency_weight`` times the notes'
  three-point (semigroup) consistency ``Phi(x, s, t) = Phi(Phi(x, s, u), u, t)``
  at a random interior ``u = s + r (t - s)``, ``r ~ U(0, 1)``: ``f(x, s, t)`` is
  pulled toward ``r f(x, s, u) + (1 - r) f(Phi(x, s, u), u, t)``, without
  gradient (``flow_map_shortcut`` is its midpoint case). Cost: two more forward
  passes (no backward) per step.
- ``flow_map_forward``: ``flow_map`` plus ``consistency_weight`` times the
  notes' forward loss in its solver form: the map to ``t`` must be the map to
  ``u = t - h`` (``h = min(consistency_h, t - s)``) followed by one Euler step of
  the student's own velocity ``f(y, u, u)`` (the diagonal pairs train it on
  ``B'(u)``), i.e. ``f(x, s, t)`` is pulled toward ``r f(x, s, u) + (1 - r) f(y,
  u, u)`` with ``y = Phi(x, s, u)`` and ``r = (u - s) / (t - s)``, without
  gradient. No teacher inside the student; no JVP. Cost: two more forward passes.

Each consistency term takes the batch's first ``consistency_share`` of rows (shortcut models use a quarter):
its extra forward passes then cost that share of a full batch's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from student.bezier import bezier_point, bezier_velocity, flow_map_velocity
from teachers.rectified_flow import sample_times
from teachers.registry import Registry
from teachers.solvers import Solution

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveSettings",
    "velocity_loss",
    "flow_map_loss",
    "sample_flow_map_times",
    "objective_loss",
    "time_inputs",
    "flow_map_step",
    "velocity_sampler",
    "flow_map_sampler",
    "student_sampler",
    "per_row",
    "compose_on_grid",
    "grid_step",
]


@dataclass(frozen=True)
class ObjectiveSettings:
    """The student's objective (``student.objectives.OBJECTIVES``) and how its times are drawn:
    ``time_sampling`` names the density of ``t`` (and of ``s, t`` before sorting); ``endpoint_share`` of
    flow-map pairs are ``(0, 1)``, ``diagonal_share`` have ``s = t``, ``grid_share`` are one jump
    ``(k/n, (k+1)/n)`` of an equal grid of ``n`` in ``grid_steps`` steps (what the few-step samplers take);
    ``consistency_weight`` weighs the consistency terms (shortcut, meanflow, tri, forward), ``consistency_h`` is
    the meanflow and forward terms' small step; ``consistency_share`` of each batch's rows get the term (the
    first ``ceil(share x B)``: a random subset, since every row's times are drawn independently)."""

    objective: str = "flow_map"
    time_sampling: str = "uniform"
    endpoint_share: float = 0.25
    diagonal_share: float = 0.1
    consistency_weight: float = 1.0
    grid_share: float = 0.0
    grid_steps: tuple[int, ...] = (2, 4)
    consistency_h: float = 0.02
    consistency_share: float = 1.0


Loss = Callable[[nn.Module, Sequence[Tensor], ObjectiveSettings, torch.Generator], Tensor]
StudentSampler = Callable[[Tensor, int | None], Solution]  # a Sampler (teachers.solvers); steps never None
GridStep = Callable[[Tensor, float, float], Tensor]  # (x at a, a, b) -> x at b


def velocity_loss(model: nn.Module, points: Sequence[Tensor], t: Tensor) -> Tensor:
    """``mean || v(B(t), t) - B'(t) ||^2``; ``model(x, t)`` is a velocity field, ``t: (B,)``."""
    return (model(bezier_point(points, t), t) - bezier_velocity(points, t)).pow(2).mean()


def flow_map_loss(model: nn.Module, points: Sequence[Tensor], s: Tensor, t: Tensor) -> Tensor:
    """``mean || f(B(s), s, t) - (B(t) - B(s)) / (t - s) ||^2`` (``B'(s)`` where ``t = s``); ``model(x, s, t)``."""
    return (model(bezier_point(points, s), s, t) - flow_map_velocity(points, s, t)).pow(2).mean()


def sample_flow_map_times(n: int, settings: ObjectiveSettings, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(s, t)`` with ``s <= t``: two draws from the density, sorted; then ``endpoint_share`` of the rows
    set to ``(0, 1)``, ``diagonal_share`` to ``t = s`` and ``grid_share`` to a jump ``(k/n, (k+1)/n)`` of
    an equal grid (``n`` drawn from ``grid_steps``, ``k`` from ``0 .. n-1``)."""
    a, b = sample_times(n, settings.time_sampling, g), sample_times(n, settings.time_sampling, g)
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    u = torch.rand(n, generator=g)
    diag_from = settings.endpoint_share
    grid_from = diag_from + settings.diagonal_share
    ends = u < diag_from
    diag = (u >= diag_from) & (u < grid_from)
    s = torch.where(ends, torch.zeros_like(s), s)
    t = torch.where(ends, torch.ones_like(t), torch.where(diag, s, t))
    if settings.grid_share == 0:
        return s, t  # no draws for the grid: the generator's stream stays what it was without it
    on_grid = (u >= grid_from) & (u < grid_from + settings.grid_share)
    sizes = torch.tensor(settings.grid_steps, dtype=s.dtype)
    size = sizes[torch.randint(len(sizes), (n,), generator=g)]
    k = torch.floor(torch.rand(n, generator=g) * size)
    return torch.where(on_grid, k / size, s), torch.where(on_grid, (k + 1) / size, t)


def _velocity(model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator) -> Tensor:
    t = sample_times(points[0].shape[0], settings.time_sampling, g).to(points[0].device, points[0].dtype)
    return velocity_loss(model, points, t)


def _flow_map(model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator) -> Tensor:
    s, t = sample_flow_map_times(points[0].shape[0], settings, g)
    ref = points[0]
    return flow_map_loss(model, points, s.to(ref.device, ref.dtype), t.to(ref.device, ref.dtype))


def consistency_rows(batch: int, share: float) -> int:
    """How many of a batch's rows get the consistency term: ``ceil(share x batch)``, at least one."""
    return max(1, min(batch, math.ceil(share * batch - 1e-9)))


def _with_consistency(target: Callable[..., Tensor], draws: bool = False) -> Loss:
    """The flow-map regression plus ``consistency_weight`` x ``|| f(x, s, t) - target ||^2`` on the batch's first
    ``consistency_rows`` rows (``consistency_share``; the regression takes every row), the target
    (``target(model, points, x, s, t, settings, r)``; with ``draws``, ``r`` is a ``(B,)`` fp32 draw from
    ``U(0, 1)``, else ``None``) computed without gradient and compared in at least fp32."""

    def loss(model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator) -> Tensor:
        s, t = sample_flow_map_times(points[0].shape[0], settings, g)
        # a (B,) draw from U(0, 1) for the targets that need one (tri's interior point); the others draw nothing,
        # so their stream of times stays what it was
        r = torch.rand(s.shape[0], generator=g) if draws and settings.consistency_weight else None
        ref = points[0]
        s, t = s.to(ref.device, ref.dtype), t.to(ref.device, ref.dtype)
        x = bezier_point(points, s)
        pred = model(x, s, t)
        regression = (pred - flow_map_velocity(points, s, t)).pow(2).mean()
        if settings.consistency_weight == 0:
            return regression
        k = consistency_rows(s.shape[0], settings.consistency_share)
        with torch.no_grad():
            goal = target(
                model,
                [p[:k] for p in points],
                x[:k],
                s[:k],
                t[:k],
                settings,
                None if r is None else r[:k].to(ref.device),
            )
        wide = torch.promote_types(pred.dtype, torch.float32)
        return regression + settings.consistency_weight * (pred[:k].to(wide) - goal.to(wide)).pow(2).mean()

    return loss


def _shortcut_target(
    model: nn.Module, points: Sequence[Tensor], x: Tensor, s: Tensor, t: Tensor, settings: ObjectiveSettings, r: None
) -> Tensor:
    """The average of the two half jumps through the midpoint ``u``."""
    u = (s + t) / 2
    first = model(x, s, u)
    return (first + model(x + per_row(u - s, x) * first, u, t)) / 2


def _meanflow_target(
    model: nn.Module, points: Sequence[Tensor], x: Tensor, s: Tensor, t: Tensor, settings: ObjectiveSettings, r: None
) -> Tensor:
    """One small step ``h`` along the path's velocity, then the map: in fp32, never dividing by ``h``."""
    gap = (t - s).float()
    h = torch.clamp(gap, max=settings.consistency_h)  # the small first step, never past t
    v = bezier_velocity(points, s).float()  # the path's velocity: in expectation the marginal one
    later = model((x.float() + per_row(h, x) * v).to(x.dtype), (s.float() + h).to(s.dtype), t).float()
    first = per_row(torch.where(gap > 0, h / gap.clamp(min=1e-12), 1.0), v)  # s = t: the velocity itself
    return first * v + (1 - first) * later


def _two_jumps(model: nn.Module, x: Tensor, s: Tensor, u: Tensor, t: Tensor, euler: bool) -> Tensor:
    """``r f(x, s, u) + (1 - r) f(Phi(x, s, u), u, t)``, or with ``euler`` ``f(Phi(x, s, u), u, u)`` (one Euler
    step of the student's own velocity) as the second term: the average velocity over ``[s, t]`` of the jump
    to ``u`` and then the rest. ``u`` is rounded to the times' dtype for the network (bf16 under a bf16
    student) and ``r = (u - s) / (t - s)`` is taken from the rounded times; the sums are in at least fp32."""
    wide = torch.promote_types(x.dtype, torch.float32)
    u = u.to(s.dtype)
    s_w, u_w, t_w = s.to(wide), u.to(wide), t.to(wide)
    gap = t_w - s_w
    r = torch.where(gap > 0, (u_w - s_w) / gap.clamp(min=1e-12), torch.zeros_like(gap))
    first = model(x, s, u).to(wide)
    later = (x.to(wide) + per_row(u_w - s_w, x) * first).to(x.dtype)
    second = model(later, u, u if euler else t).to(wide)
    return per_row(r, x) * first + per_row(1 - r, x) * second


def _tri_target(
    model: nn.Module, points: Sequence[Tensor], x: Tensor, s: Tensor, t: Tensor, settings: ObjectiveSettings, r: Tensor
) -> Tensor:
    """Through a random interior point ``u = s + r (t - s)``."""
    wide = torch.promote_types(x.dtype, torch.float32)
    return _two_jumps(model, x, s, s.to(wide) + r.to(wide) * (t.to(wide) - s.to(wide)), t, euler=False)


def _forward_target(
    model: nn.Module, points: Sequence[Tensor], x: Tensor, s: Tensor, t: Tensor, settings: ObjectiveSettings, r: None
) -> Tensor:
    """The map to ``u = t - h``, then one Euler step of the student's own velocity ``f(y, u, u)``."""
    wide = torch.promote_types(x.dtype, torch.float32)
    t_w = t.to(wide)
    return _two_jumps(model, x, s, t_w - torch.clamp(t_w - s.to(wide), max=settings.consistency_h), t, euler=True)


def per_row(h: Tensor, x: Tensor) -> Tensor:
    """Per-row values ``h`` of shape ``(B,)`` shaped to broadcast against ``x`` of shape ``(B, *D)``."""
    return h.view(-1, *([1] * (x.dim() - 1)))


def _batch_time(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


def flow_map_step(model: nn.Module, x: Tensor, s: float, t: float) -> Tensor:
    """``Phi(x, s, t) = x + (t - s) f(x, s, t)``."""
    return x + (t - s) * model(x, _batch_time(x, s), _batch_time(x, t))


def compose_on_grid(step: GridStep, noise: Tensor, steps: int) -> Tensor:
    """``steps`` applications of ``step(x, a, b)`` on an equal grid of ``[0, 1]``, one network call each; the
    graph is kept (the samplers below run it without gradient, the distribution phase with)."""
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
    x = noise
    for a, b in zip(grid[:-1], grid[1:]):
        x = step(x, a, b)
    return x


def _grid_sampler(step: GridStep) -> StudentSampler:
    @torch.no_grad()
    def sample(noise: Tensor, steps: int | None) -> Solution:
        if steps is None:
            raise ValueError("a student samples on a grid of steps: the adaptive solver is a teacher's")
        return Solution(x=compose_on_grid(step, noise, steps), nfe=steps)

    return sample


def velocity_step(model: nn.Module) -> GridStep:
    """One Euler step of the student's ODE ``dx/dt = v(x, t)``."""
    return lambda x, a, b: x + (b - a) * model(x, _batch_time(x, a))


def flow_map_grid_step(model: nn.Module) -> GridStep:
    """One jump of the flow map, ``Phi(.., a, b)``."""
    return lambda x, a, b: flow_map_step(model, x, a, b)


def velocity_sampler(model: nn.Module) -> StudentSampler:
    """Euler on the student's ODE ``dx/dt = v(x, t)`` with ``steps`` equal steps."""
    return _grid_sampler(velocity_step(model))


def flow_map_sampler(model: nn.Module) -> StudentSampler:
    """The flow map composed on an equal grid: ``Phi(.., t_{k-1}, t_k)`` for ``k = 1..steps``."""
    return _grid_sampler(flow_map_grid_step(model))


@dataclass(frozen=True)
class Objective:
    """One objective: its loss, the time inputs of its network (1: ``v(x, t)``, 2: ``f(x, s, t)``), and
    its sampler's step on a grid (``compose_on_grid``)."""

    loss: Loss
    time_inputs: int
    step: Callable[[nn.Module], GridStep]


OBJECTIVES: Registry[Objective] = Registry(
    "objective",
    {
        "velocity": Objective(_velocity, 1, velocity_step),
        "flow_map": Objective(_flow_map, 2, flow_map_grid_step),
        "flow_map_shortcut": Objective(_with_consistency(_shortcut_target), 2, flow_map_grid_step),
        "flow_map_meanflow": Objective(_with_consistency(_meanflow_target), 2, flow_map_grid_step),
        "flow_map_tri": Objective(_with_consistency(_tri_target, draws=True), 2, flow_map_grid_step),
        "flow_map_forward": Objective(_with_consistency(_forward_target), 2, flow_map_grid_step),
    },
)


def time_inputs(objective: str) -> int:
    """How many times the student network takes: 1 (``v(x, t)``) or 2 (``f(x, s, t)``)."""
    return OBJECTIVES[objective].time_inputs


def student_sampler(objective: str, model: nn.Module) -> StudentSampler:
    """The sampler that matches how the student was trained."""
    return _grid_sampler(OBJECTIVES[objective].step(model))


def grid_step(objective: str, model: nn.Module) -> GridStep:
    """One step of the student's sampler, ``(x, a, b) -> x`` at ``b`` (``compose_on_grid`` composes it)."""
    return OBJECTIVES[objective].step(model)


def objective_loss(
    model: nn.Module, points: Sequence[Tensor], settings: ObjectiveSettings, g: torch.Generator
) -> Tensor:
    """``settings.objective``'s loss on a batch of control points, with times drawn from ``g`` (on CPU)."""
    return OBJECTIVES[settings.objective].loss(model, points, settings, g)
