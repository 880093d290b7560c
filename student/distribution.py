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

With ``real_weight`` set, a real-vs-generated term joins it (in the spirit of DMD2 and SiDA): a small
classifier head reads the fake field's middle features (``feature_module``) and is trained, in each fake
update, to tell the run's own training images from the student's samples, both noised to a uniform time
(logistic loss, ``classifier_weight``); the student gets the non-saturating term ``softplus(-logit)`` on its
noised samples, through the sample. This is where real data enter: the teacher's field alone can only pull
the student to the teacher's distribution, with its errors; the classifier sees the data themselves. The
real side is the run's training split, never the held-out images that FID is measured on.

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
from student.settings import StudentJob
from teachers.ensemble import load_teacher
from teachers.settings import DataSettings
from teachers.train_teacher import load_run_data

__all__ = [
    "DistributionMatching",
    "sample_with_grad",
    "generator_loss",
    "fake_loss",
    "clean_prediction",
    "feature_module",
    "real_images",
    "phase_teacher",
    "RealClassifier",
]


def sample_with_grad(objective: str, model: nn.Module, noise: Tensor, steps: int) -> Tensor:
    """The student's sample in ``steps`` equal steps of its own sampler (``objective``'s), keeping the graph."""
    return compose_on_grid(grid_step(objective, model), noise, steps)


def _noised(x: Tensor, settings: DmPhaseSettings, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` (fp32) noised to times uniform in ``[t_min, t_max]``: ``(t, eps, x_t)``; ``x_t`` keeps ``x``'s graph."""
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


def _flow_matching(v: Tensor, x: Tensor, eps: Tensor) -> Tensor:
    """``|| v - (x - eps) ||^2`` (mean): a velocity at ``x_t`` against the linear path's."""
    return (v - (x - eps)).pow(2).mean()


def fake_loss(fake: nn.Module, x: Tensor, settings: DmPhaseSettings, g: torch.Generator) -> Tensor:
    """Flow matching on the student's samples ``x`` (detached): ``|| v_fake(x_t, t) - (x - eps) ||^2``."""
    xf = x.detach().float()
    t, eps, xt = _noised(xf, settings, g)
    return _flow_matching(fake(xt, t), xf, eps)


def real_images(data: DataSettings | None, run_seed: int) -> Tensor | None:
    """The real side of the real-vs-generated term: the training split of the run's ``data`` (split as the
    teacher's was, with the run's seed); None without the term. The held-out images are never read."""
    return None if data is None else load_run_data(data, run_seed).train


def phase_teacher(job: StudentJob) -> nn.Module:
    """The phase's frozen teacher ``u``: the run's first teacher ``job.dm_teacher`` loaded as the teacher actors
    load it (``teachers.ensemble.load_teacher``): a native checkpoint, a diffusers folder read in its
    convention, or an ensemble of them (the mean of its members' velocities)."""
    if job.dm_teacher is None:
        raise ValueError(
            "the distribution-matching phase (student.finetune.steps) needs a teacher: student.init teacher"
        )
    return load_teacher(job.dm_teacher, job.data_shape)


def feature_module(field: nn.Module) -> nn.Module:
    """The module of a velocity field whose output the real-vs-generated classifier reads: a UNet's middle
    (this project's ``mid2``, diffusers' ``mid_block``), else an MLP's last residual block."""
    last_block = None
    for name, module in field.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("mid2", "mid_block"):
            return module
        if leaf == "blocks" and isinstance(module, nn.ModuleList) and len(module):
            last_block = module[-1]
    if last_block is None:
        raise ValueError(
            f"{type(field).__name__} has no module named mid2, mid_block or blocks: the real-vs-generated "
            "term (student.finetune.real_weight) cannot read its features; set real_weight=0"
        )
    return last_block


class RealClassifier(nn.Module):
    """A logit from ``field``'s middle features at ``(x_t, t)``: a forward hook on ``feature_module(field)``
    keeps its output, and a small head (a convolution for image features, a linear layer for vectors, then a
    pooled linear read-out) turns it into one number per row. The field's own forward runs each call."""

    def __init__(self, field: nn.Module, data_shape: tuple[int, ...], device: torch.device):
        super().__init__()
        self._features: list[Tensor] = []
        feature_module(field).register_forward_hook(lambda _m, _i, out: self._features.append(out))
        self.field = [field]  # not a submodule: its parameters are the fake field's, trained by its owner
        with torch.no_grad():
            _, probe = self.features(torch.zeros((2, *data_shape), device=device), torch.full((2,), 0.5, device=device))
        c = probe.shape[1]
        if probe.dim() == 4:
            self.head: nn.Module = nn.Sequential(
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(c, 1),
            )
        else:
            self.head = nn.Sequential(nn.SiLU(), nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
        self.head.to(device)

    def features(self, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The field's velocity at ``(x_t, t)`` and the features its forward left with the hook."""
        self._features.clear()
        velocity = self.field[0](xt, t)
        feats = self._features[-1]
        self._features.clear()
        return velocity, feats[0] if isinstance(feats, tuple) else feats

    def logit_and_velocity(self, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward of the field: the logit per row and the velocity (the fake field's flow matching)."""
        velocity, feats = self.features(xt, t)
        return self.head(feats.float()).flatten(), velocity

    def forward(self, xt: Tensor, t: Tensor) -> Tensor:
        return self.logit_and_velocity(xt, t)[0]


class DistributionMatching:
    """The frozen teacher, the fake field (a copy of the teacher, fp32) and its Adam; ``average(params)``
    averages the fake field's gradients over ranks (identity on one process). With ``real_weight`` set,
    ``real`` (the run's training images) and the classifier on the fake field's features (``RealClassifier``,
    trained with the fake field by the same Adam)."""

    def __init__(
        self,
        teacher: nn.Module,
        settings: DmPhaseSettings,
        device: torch.device,
        average: Callable[[list[nn.Parameter]], None] = lambda params: None,
        real: Tensor | None = None,
    ):
        self.settings, self.average = settings, average
        self.teacher = teacher.float().to(device).eval().requires_grad_(False)
        self.fake = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.classifier: RealClassifier | None = None
        self.real: Tensor | None = None
        if settings.real_weight > 0:
            if real is None or not len(real):
                raise ValueError("student.finetune.real_weight > 0 needs the run's training images (real)")
            self.real = real.float().to(device)
            self.classifier = RealClassifier(self.fake, tuple(real.shape[1:]), device)
        groups: list[dict] = [{"params": list(self.fake.parameters()), "lr": settings.fake_lr}]
        if self.classifier is not None:  # a fresh head learns at its own rate beside the fake field's
            groups.append({"params": list(self.classifier.head.parameters()), "lr": settings.classifier_lr})
        self.params: list[nn.Parameter] = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.Adam(groups, lr=settings.fake_lr)
        self.last_classifier: dict[str, float] = {}  # the classifier's figures at the last fake update

    def steps_for(self, g: torch.Generator) -> int:
        """The sample's step count for this student step, drawn from ``sample_steps``."""
        choices = self.settings.sample_steps
        return choices[int(torch.randint(len(choices), (1,), generator=g))] if len(choices) > 1 else choices[0]

    def loss(self, x: Tensor, g: torch.Generator) -> Tensor:
        """``weight`` x the generator term for the student's samples ``x`` (with their graph), plus
        ``real_weight`` x the real-vs-generated term when it is on (``real_term``)."""
        loss = self.settings.weight * generator_loss(x, self.teacher, self.fake, self.settings, g)
        if self.classifier is not None:
            loss = loss + self.settings.real_weight * self.real_term(x, g)
        return loss

    def real_term(self, x: Tensor, g: torch.Generator) -> Tensor:
        """``softplus(-logit)`` of the classifier at the student's samples ``x`` noised (mean over rows): small
        when they pass as real. Its gradient reaches only ``x``: the fake field and the head are held."""
        assert self.classifier is not None
        t, _, xt = _noised(x.float(), self.settings, g)
        for p in self.params:
            p.requires_grad_(False)
        try:
            logit = self.classifier(xt, t)
        finally:
            for p in self.params:
                p.requires_grad_(True)
        return nn.functional.softplus(-logit).mean()

    def _real_batch(self, n: int, g: torch.Generator) -> Tensor:
        assert self.real is not None
        return self.real[torch.randint(len(self.real), (n,), generator=g).to(self.real.device)]

    def update_fake(self, x: Tensor, g: torch.Generator) -> None:
        """``fake_updates`` Adam steps of flow matching on ``x`` (detached), each with the classifier's
        logistic loss (real training images against ``x``, both noised) when the real term is on."""
        xf = x.detach().float()
        for update in range(self.settings.fake_updates):
            self.optimizer.zero_grad(set_to_none=False)
            if self.classifier is None:
                loss = fake_loss(self.fake, xf, self.settings, g)
            else:
                t, eps, xt = _noised(xf, self.settings, g)
                fake_logit, velocity = self.classifier.logit_and_velocity(xt, t)
                flow_matching = _flow_matching(velocity, xf, eps)
                loss = flow_matching
                tr, _, xr = _noised(self._real_batch(len(xf), g), self.settings, g)
                real_logit = self.classifier(xr, tr)
                softplus = nn.functional.softplus
                classify = softplus(fake_logit).mean() + softplus(-real_logit).mean()
                loss = loss + self.settings.classifier_weight * classify
                if update == self.settings.fake_updates - 1:  # read once a step (a device sync each on a GPU)
                    self.last_classifier = {
                        "fake_loss": float(flow_matching.detach()),
                        "classifier_loss": float(classify.detach()),
                        "real_accuracy": float((real_logit.detach() > 0).float().mean()),
                        "fake_accuracy": float((fake_logit.detach() < 0).float().mean()),
                    }
            loss.backward()
            self.average(self.params)
            self.optimizer.step()

    def state(self) -> dict:
        """The fake field, the classifier's head and their optimizer (tensors and plain values, for
        ``student.engine_state.pack_tree``)."""
        state = {"fake": self.fake.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.classifier is not None:
            state["head"] = self.classifier.head.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        device = next(self.fake.parameters()).device
        self.fake.load_state_dict({k: v.to(device) for k, v in state["fake"].items()})
        if self.classifier is not None and "head" in state:
            self.classifier.head.load_state_dict({k: v.to(device) for k, v in state["head"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
