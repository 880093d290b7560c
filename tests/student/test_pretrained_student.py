"""A diffusers teacher first-class: the student of its own architecture (started as its field, converting
times as it does, saved and loaded as any student) and the distribution-matching phase scored by it (a tiny
``UNet2DModel`` with an attention block, trained a few steps and saved by the test)."""

import sys
from pathlib import Path

import pytest
import torch

from cluster.config import parse_config
from student.distribution import DistributionMatching, feature_module, phase_teacher, real_images
from student.ds_config import student_optimizer
from student.models import load_model
from student.networks import initial_student, student_arch
from student.objectives import time_inputs
from student.plain_loop import PlainEngine
from student.settings import StudentJob
from student.train_step import train_step
from teachers.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from teachers.models import load_velocity

diffusers = pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffusers_digits_teacher import train_flow_match_unet  # noqa: E402 - the helper beside the tests

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """A flow-matching ``UNet2DModel`` (attention in its lower block), a few Adam steps on the digits, saved in a
    pipeline's layout with 500 training timesteps."""
    root = tmp_path_factory.mktemp("pretrained")
    unet, _ = train_flow_match_unet(
        root / "unet", steps=5, num_train_timesteps=500, channels=(8, 16), norm_groups=4, batch_size=16
    )
    return unet


def _job(unet, objective="flow_map", **finetune) -> StudentJob:
    cfg = parse_config(
        {
            "name": "pretrained",
            "data": {"name": "digits", "n_held_out": 450},
            "teacher": {"network": {"arch": "unet", "channels": 8, "time_embed_dim": 16}},
            "teachers": [{"name": "hf", "checkpoints": [str(unet)], "convention": "flow_match"}],
            "student": {"objective": objective, "steps": 4, "batch_size": 8, "finetune": finetune},
        }
    )
    return StudentJob.of(cfg, None, SHAPE, cfg.teacher_pool[0].first_teacher())


def _inputs(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn((n, *SHAPE), generator=g), torch.rand(n, generator=g), torch.rand(n, generator=g)


def test_a_velocity_student_is_the_teachers_unet_and_its_field_exactly(unet):
    student = initial_student(_job(unet, "velocity")).eval()  # a train-mode forward may take other kernels
    teacher = load_velocity(unet, SHAPE, "flow_match")
    assert type(student.model).__name__ == "UNet2DModel" and student.num_train_timesteps == 500
    x, t, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(student(x, t), teacher(x, t))


def test_a_flow_map_student_starts_as_the_teachers_field_at_every_second_time_and_learns_it(unet):
    job = _job(unet)
    student = initial_student(job).eval()
    teacher = load_velocity(unet, SHAPE, "flow_match")
    assert student.model.config.class_embed_type == "timestep"
    x, s, t = _inputs()
    with torch.no_grad():
        want = teacher(x, s)
        assert torch.equal(student(x, s, t), want)  # f(x, s, t) = v(x, s): the one step is the teacher's Euler step
        assert torch.equal(student(x, s, 1 - t), want)
    g = torch.Generator().manual_seed(2)
    points = [torch.randn((8, *SHAPE), generator=g) for _ in range(2)]
    engine = PlainEngine(student, student_optimizer(job.optim, student.parameters()), job.optim.grad_clip, "fp32")
    train_step(engine, job, points, g, 1e-3)
    with torch.no_grad():  # the second time's embedding, zero at start, is trained: t now matters
        assert not torch.equal(student(x, s, t), student(x, s, 1 - t))


@pytest.mark.parametrize("objective", ["flow_map", "velocity"])
def test_a_pretrained_student_round_trips_as_a_student_checkpoint(unet, tmp_path, objective):
    job = _job(unet, objective)
    student = initial_student(job)
    arch, arch_kwargs = student_arch(student, job.network)  # what the pool's checkpoint records
    meta = CheckpointMeta(
        arch=arch,
        arch_kwargs=arch_kwargs,
        data_shape=list(SHAPE),
        time_inputs=time_inputs(objective),
        role="student",
        extra={"objective": objective},
    )
    save_checkpoint(tmp_path / "student", student, meta)
    loaded = load_model(tmp_path / "student", expect_data_shape=SHAPE)
    assert (loaded.kind, loaded.objective, arch) == ("student", objective, "diffusers")
    x, s, t = _inputs()
    times = (s, t) if objective == "flow_map" else (s,)
    with torch.no_grad():
        assert torch.equal(loaded.network(x, *times), student.eval()(x, *times))
        solution = loaded.sampler()(x, 2)
    assert solution.x.shape == x.shape and torch.isfinite(solution.x).all() and solution.nfe == 2
    assert torch.equal(load_checkpoint(tmp_path / "student")[0](x, *times), loaded.network(x, *times))


def test_the_phase_is_scored_by_the_diffusers_teacher_and_reaches_the_student(unet):
    job = _job(unet, steps=4, regression_weight=0.0, real_weight=1.0)  # the loss is the phase's terms alone
    dm = DistributionMatching(phase_teacher(job), job.dm_phase, torch.device("cpu"), real=real_images(job.real_data, 0))
    assert type(dm.teacher.model).__name__ == "UNet2DModel" and dm.teacher.num_train_timesteps == 500
    names = dict(dm.fake.named_modules())  # the real-vs-generated classifier reads diffusers' mid_block
    assert names["model.mid_block"] is feature_module(dm.fake)
    torch.manual_seed(job.seed)
    student = initial_student(job)
    before = [p.detach().clone() for p in student.parameters()]
    fake_before = [p.detach().clone() for p in dm.fake.parameters()]
    engine = PlainEngine(student, student_optimizer(job.optim, student.parameters()), job.optim.grad_clip, "fp32")
    g = torch.Generator().manual_seed(3)
    points = [torch.randn((8, *SHAPE), generator=g) for _ in range(2)]
    loss = train_step(engine, job, points, g, job.lr_at(0), dm)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    moved = sum(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert moved > len(before) // 2, moved  # the phase's gradient came through the student's samples
    assert any(not torch.equal(a, b) for a, b in zip(fake_before, dm.fake.parameters()))
    assert all(not p.requires_grad for p in dm.teacher.parameters())
    assert set(dm.last_classifier) == {"fake_loss", "classifier_loss", "real_accuracy", "fake_accuracy"}
