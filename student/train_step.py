"""One student step, the same wherever a student trains: a rank of the pool (``student.train_loop``), the
pre-flight step check (``student.step_check``), the plain baseline loop (``student.plain_loop``) and the
DeepSpeed step tests. The loop around it (what data, which learning rate, EMA, checkpoints) is the caller's."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from student.distribution import DistributionMatching, sample_with_grad
from student.objectives import objective_loss
from student.settings import StudentJob

__all__ = ["train_step", "dm_phase_loss"]


def dm_phase_loss(
    job: StudentJob,
    engine,
    dm: DistributionMatching,
    loss: Tensor,
    g: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """A distribution-matching step's loss: the objective's ``loss`` at ``dm_phase.regression_weight`` (YAML
    ``student.finetune``) plus the term on a batch of the student's own samples (drawn with gradients, one of
    ``dm_phase.sample_steps``); returns it and the samples (the fake field trains on them after the step)."""
    noise = torch.randn((job.optim.batch_size, *job.data_shape), generator=g).to(device, dtype)
    samples = sample_with_grad(job.objective.objective, engine, noise, dm.steps_for(g))
    return job.dm_phase.regression_weight * loss + dm.loss(samples, g), samples


def train_step(
    engine,
    job: StudentJob,
    points: Sequence[Tensor],
    g: torch.Generator,
    lr: float,
    dm: DistributionMatching | None = None,
) -> Tensor:
    """One optimizer step of the student in ``engine`` on the control points ``points`` (``[x_0, .., x_1]``,
    each ``(B, *D)``, on the engine's device in its compute dtype): the learning rate set to ``lr``, the
    objective's loss (the forward passes; times drawn from ``g``), with ``dm`` a step of the distribution-
    matching phase (``dm_phase_loss``), then ``engine.backward`` and ``engine.step`` (clipping, the optimizer's
    step, gradients zeroed), then the phase's fake-field update. ``engine`` is a DeepSpeed engine, or anything
    with its ``optimizer``, ``__call__``, ``backward`` and ``step`` (``student.plain_loop.PlainEngine``).
    Returns the loss."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    loss = objective_loss(engine, points, job.objective, g)
    if dm is not None:
        loss, samples = dm_phase_loss(job, engine, dm, loss, g, points[0].device, points[0].dtype)
    engine.backward(loss)
    engine.step()
    if dm is not None:
        dm.update_fake(samples, g)
    return loss
