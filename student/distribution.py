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

from student.settings import FinetuneSettings

__all__ = ["DistributionMatching", "sample_with_grad", "generator_loss", "fake_loss", "clean_prediction"]


def _per_row(h: Tensor, x: Tensor) -> Tensor:
    return h.view(-1, *([1] * (x.dim() - 1)))


def sample_with_grad(model: nn.Module, noise: Tensor, steps: int, time_inputs: int) -> Tensor:
    """The student's sample in ``steps`` equal steps, keeping the graph: the flow map composed
    (``time_inputs`` 2: ``x + (b - a) f(x, a, b)``) or Euler on a velocity student (1: ``x + (b - a) v(x, a)``)."""
    x = noise
    for k in range(steps):
        a = torch.full((x.shape[0],), k / steps, dtype=x.dtype, device=x.device)
        b = torch.full_like(a, (k + 1) / steps)
        out = model(x, a, b) if time_inputs == 2 else model(x, a)
        x = x + _per_row(b - a, x) * out
    return x


def _times(n: int, settings: FinetuneSettings, g: torch.Generator, like: Tensor) -> Tensor:
    t = settings.t_min + (settings.t_max - settings.t_min) * torch.rand(n, generator=g, dtype=torch.float64)
    return t.to(like.device, torch.float32)


def clean_prediction(field: nn.Module, xt: Tensor, t: Tensor) -> Tensor:
    """``x_t + (1 - t) v(x_t, t)``: what the velocity field ``v`` predicts ``x_1`` to be."""
    return xt + _per_row(1 - t, xt) * field(xt, t)


def generator_loss(x: Tensor, teacher: nn.Module, fake: nn.Module, settings: FinetuneSettings,
                   g: torch.Generator) -> Tensor:
    """DMD's surrogate for the student's samples ``x`` (with their graph): its gradient in ``x`` is the gap of
    the fake field's and the teacher's clean predictions at ``x`` noised to a uniform time, normalised per
    sample. Fields run in fp32 without gradient."""
    xf = x.detach().float()
    t = _times(x.shape[0], settings, g, xf)
    eps = torch.randn(xf.shape, generator=g).to(xf.device)
    with torch.no_grad():
        xt = _per_row(1 - t, xf) * eps + _per_row(t, xf) * xf
        real = clean_prediction(teacher, xt, t)
        gap = clean_prediction(fake, xt, t) - real
        dims = tuple(range(1, xf.dim()))
        norm = (xf - real).abs().mean(dim=dims, keepdim=True).clamp(min=1e-4)
        goal = xf - gap / norm
    return 0.5 * (x.float() - goal).pow(2).mean()


def fake_loss(fake: nn.Module, x: Tensor, settings: FinetuneSettings, g: torch.Generator) -> Tensor:
    """Flow matching on the student's samples ``x`` (detached): ``|| v_fake(x_t, t) - (x - eps) ||^2``."""
    xf = x.detach().float()
    t = _times(x.shape[0], settings, g, xf)
    eps = torch.randn(xf.shape, generator=g).to(xf.device)
    xt = _per_row(1 - t, xf) * eps + _per_row(t, xf) * xf
    return (fake(xt, t) - (xf - eps)).pow(2).mean()


class DistributionMatching:
    """The frozen teacher, the fake field (a copy of the teacher, fp32) and its Adam; ``average(params)``
    averages the fake field's gradients over ranks (identity on one process)."""

    def __init__(self, teacher: nn.Module, settings: FinetuneSettings, device: torch.device,
                 average: Callable[[list[nn.Parameter]], None] = lambda params: None):
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

    def update_fake(self, x: Tensor, g: torch.Generator) -> Tensor:
        """``fake_updates`` Adam steps of flow matching on ``x`` (detached); returns the last loss (a tensor)."""
        last = torch.zeros(())
        for _ in range(self.settings.fake_updates):
            self.optimizer.zero_grad(set_to_none=False)
            last = fake_loss(self.fake, x, self.settings, g)
            last.backward()
            self.average(list(self.fake.parameters()))
            self.optimizer.step()
        return last.detach()

    def state(self) -> dict:
        """The fake field and its optimizer (tensors and plain values, for ``student.engine_state.pack_tree``)."""
        return {"fake": self.fake.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        device = next(self.fake.parameters()).device
        self.fake.load_state_dict({k: v.to(device) for k, v in state["fake"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
