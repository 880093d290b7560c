"""The one student step (``student.train_step.train_step``): learning rate, the objective's forward and loss,
backward, the optimizer's step, in that order, on any engine (here the plain loop's ``PlainEngine``)."""

import copy

import torch
from torch import nn

from student.ds_config import student_optimizer
from student.networks import build_student
from student.objectives import objective_loss
from student.plain_loop import PlainEngine
from student.settings import StudentJob
from student.train_step import train_step
from cluster.config import parse_config


def _job():
    cfg = parse_config(
        {
            "name": "step",
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp", "hidden": 16, "depth": 1, "time_embed_dim": 8}},
            "student": {"objective": "flow_map", "batch_size": 8, "lr": 1e-2, "grad_clip": 0.5},
        }
    )
    return StudentJob.of(cfg, None, (2,), None)


def test_one_step_is_the_objective_s_gradient_clipped_and_applied_at_the_given_rate():
    job = _job()
    torch.manual_seed(0)
    model = build_student(job.network.arch, job.data_shape, job.network.kwargs(), job.objective.objective)
    reference = copy.deepcopy(model)
    points = [torch.randn(8, 2, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    engine = PlainEngine(model, student_optimizer(job.optim, model.parameters()), job.optim.grad_clip, "fp32")
    loss = train_step(engine, job, points, torch.Generator().manual_seed(5), lr=3e-3)

    optimizer = student_optimizer(job.optim, reference.parameters())
    for group in optimizer.param_groups:
        group["lr"] = 3e-3
    expected = objective_loss(reference, points, job.objective, torch.Generator().manual_seed(5))
    expected.backward()
    nn.utils.clip_grad_norm_(reference.parameters(), job.optim.grad_clip)
    optimizer.step()

    assert torch.equal(loss.detach(), expected.detach())
    assert engine.optimizer.param_groups[0]["lr"] == 3e-3
    for got, want in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(got, want, atol=1e-7), (got - want).abs().max()
        assert got.grad is None  # zeroed after the step, as DeepSpeed's engine.step leaves them
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), build_student_like(job).parameters()))


def build_student_like(job: StudentJob) -> nn.Module:
    torch.manual_seed(0)
    return build_student(job.network.arch, job.data_shape, job.network.kwargs(), job.objective.objective)
