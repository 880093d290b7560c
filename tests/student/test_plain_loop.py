"""The plain loop the pipeline bench measures against: the student's own pieces in one process, no Ray."""

import torch

from student.plain_loop import plain_student, plain_student_rate
from student.settings import StudentJob
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from cluster.config import parse_config
from teachers.ensemble import TeacherSpec
from teachers.nets import build_network


def _job(tmp_path, objective):
    cfg = parse_config(
        {
            "name": "plain",
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16}},
            "student": {"objective": objective, "batch_size": 32, "lr": 2e-3, "warmup_steps": 2, "log_every": 5},
        }
    )
    net = cfg.teacher_training.network
    teacher = build_network(net.arch, (2,), **net.kwargs())
    save_checkpoint(
        tmp_path / "teacher", teacher, CheckpointMeta(arch=net.arch, arch_kwargs=net.kwargs(), data_shape=[2])
    )
    return StudentJob.of(cfg, None, (2,), TeacherSpec((str(tmp_path / "teacher"),))), teacher


def test_the_plain_student_starts_from_the_teacher(tmp_path):
    job, teacher = _job(tmp_path, "velocity")
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.allclose(plain_student(job, torch.device("cpu"))(x, t), teacher(x, t))


def test_the_plain_loop_trains_and_reports_its_rate(tmp_path):
    job, _ = _job(tmp_path, "flow_map")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=g)
    x1 = x0 + 1.0  # a constant velocity: easy to learn
    got = plain_student_rate(
        job, [x0, x1], batch_size=32, steps=20, warmup_steps=2, device=torch.device("cpu"), precision="fp32"
    )
    assert got["steps"] == 20 and got["steps_per_second"] > 0
    assert got["records_per_second"] == got["steps_per_second"] * 32
    assert got["parameters"] > 0 and torch.isfinite(torch.tensor(got["loss"]))
