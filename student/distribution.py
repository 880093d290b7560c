"""Distribution matching: the student's own samples scored with the teacher's velocity field (DMD-style, for
flows). Pure torch: no Ray, Redis or DeepSpeed; the caller averages the fake field's gradients over ranks.

The regression objectives teach the student the teacher's map pair by pair, so a one-step student inherits
the teacher's errors and adds its own. This term looks at the distribution instead. With
``x_t = (1 - t) eps + t x`` (noise at ``t = 0``, data at ``t = 1``, as the teachers are trained), a velocity
field ``v`` predicts the clean sample ``x_t + (1 - t) v(x_t, t)``. Two fields are compared at the student's
samples ``x`` noised to ``x_t``:

- the teacher's ``u`` (frozen): the flow of the data distribution;
- a fake field ``v_fake``, started from the teacher and trained by flow matching on the student's samples
  (``fake_loss``): the flow of the student's distribution.

The score of a linear-path marginal is ``-(x_t - t v(x_t, t)) / (1 - t)``, so the gradient of
``KL(student || data)`` through ``x`` is ``E_t, eps [ w(t) (v_fake - u)(x_t, t) ]`` for a positive weight
``w``. ``generator_loss`` takes DMD's form of it: the gap between the two clean predictions,
``(1 - t) (v_fake - u)``, divided by the mean absolute gap between ``x`` and the teacher's clean prediction
(per sample), and applied to ``x`` through ``0.5 || x - stopgrad(x - gap) ||^2`` (mean over elements), so
that only ``x`` carries a gradient, back through the student's sampler. The student's regression on the
guides stays in the loss beside it (its anchor); the term can carry the student past its teacher, since it
asks for the data's distribution, not the teacher's pairs.

Costs per student step (B rows): the student's sample with gradient (``steps`` forward passes and their
backward), one teacher and one fake forward pass, and per fake update one fake forward and backward.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from student.objectives import compose_on_grid, grid_step, per_row
from student.section import DmPhaseSettings

__all__ = ["DistributionMatching", "sample_with_grad", "generator_loss", "fake_loss", "clean_prediction"]


def sample_with_grad(objective: str, model: nn.Module, noise: Tensor, steps: int) -> Tensor:
    """The student's sample in ``steps`` equal steps of its own sampler (``objective``'s), keeping the graph."""
    return compose_on_grid(grid_step(objective, model), noise, steps)


def _noised(x: Tensor, settings: DmPhaseSettings, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` (fp32, detached) noised to times uniform in ``[t_min, t_max]``: ``(t, eps, x_t)``."""
    t = settings.t_min + (settings.t_max - settings.t_min) * torch.rand(x.shape[0], generator=g, dtype=torch.float64)
    t = t.to(x.device, torch.float32)
    eps = torch.randn(x.shape, generator=g).to(x.device)
    return t, eps, per_row(1 - t, x) * eps + per_row(t, x) * x


def clean_prediction(field: nn.Module, xt: Tensor, t: Tensor) -> Tensor:
    """``x_t + (1 - t) v(x_t, t)``: what the velocity field ``v`` predicts ``x_1`` to be."""
    return xt + per_row(1 - t, xt) * field(xt, t)


def generator_loss(
    x: Tensor, teacher: nn.Module, fake: nn.Module, settings: DmPhaseSettings, g: torch.Generator
) -> Tensor:
    """DMD's surrogate for the student's samples ``x`` (with their graph): its gradient in ``x`` is the gap of
    the fake field's and the teacher's clean predictions at ``x`` noised to a uniform time, normalised per
    sample. Fields run in fp32 without gradient."""
    xf = x.detach().float()
    t, _, xt = _noised(xf, settings, g)
    with torch.no_grad():
        real = clean_prediction(teacher, xt, t)
        gap = clean_prediction(fake, xt, t) - real
        dims = tuple(range(1, xf.dim()))
        norm = (xf - real).abs().mean(dim=dims, keepdim=True).clamp(min=1e-4)
        goal = xf - gap / norm
    return 0.5 * (x.float() - goal).pow(2).mean()


def fake_loss(fake: nn.Module, x: Tensor, settings: DmPhaseSettings, g: torch.Generator) -> Tensor:
    """Flow matching on the student's samples ``x`` (detached): ``|| v_fake(x_t, t) - (x - eps) ||^2``."""
    xf = x.detach().float()
    t, eps, xt = _noised(xf, settings, g)
    return (fake(xt, t) - (xf - eps)).pow(2).mean()


class DistributionMatching:
    """The frozen teacher, the fake field (a copy of the teacher, fp32) and its Adam; ``average(params)``
    averages the fake field's gradients over ranks (identity on one process)."""

    def __init__(
        self,
        teacher: nn.Module,
        settings: DmPhaseSettings,
        device: torch.device,
        average: Callable[[list[nn.Parameter]], None] = lambda params: None,
    ):
        self.settings, self.average = settings, average
        self.teacher = teacher.float().to(device).eval().requires_grad_(False)
        self.fake = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.fake.parameters(), lr=settings.fake_lr)

    def steps_for(self, g: torch.Generator) -> int:
        """The sample's step count for this student step, drawn from ``sample_steps``."""
        choices = self.settings.sample_steps
        return choices[int(torch.randint(len(choices), (1,), generator=g))] if len(choices) > 1 else choices[0]

    def loss(self, x: Tensor, g: torch.Generator) -> Tensor:
        """``weight`` x the generator term for the student's samples ``x`` (with their graph)."""
        return self.settings.weight * generator_loss(x, self.teacher, self.fake, self.settings, g)

    def update_fake(self, x: Tensor, g: torch.Generator) -> None:
        """``fake_updates`` Adam steps of flow matching on ``x`` (detached)."""
        params = list(self.fake.parameters())
        for _ in range(self.settings.fake_updates):
            self.optimizer.zero_grad(set_to_none=False)
            fake_loss(self.fake, x, self.settings, g).backward()
            self.average(params)
            self.optimizer.step()

    def state(self) -> dict:
        """The fake field and its optimizer (tensors and plain values, for ``student.engine_state.pack_tree``)."""
        return {"fake": self.fake.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        device = next(self.fake.parameters()).device
        self.fake.load_state_dict({k: v.to(device) for k, v in state["fake"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
