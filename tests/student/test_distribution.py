"""The distribution-matching term: exact values on fields written by hand, and that it moves a sampler's
distribution toward the teacher's where the regression alone cannot."""

import json

import pytest
import torch
from torch import nn

from student.distribution import DistributionMatching, clean_prediction, fake_loss, generator_loss, sample_with_grad
from student.engine_state import pack_tree, unpack_tree
from student.section import DmPhaseSettings


class Field(nn.Module):
    """A velocity field whose clean prediction from ``x_t`` is ``mean`` for every ``x_t``:
    ``v(x, t) = (mean - x) / (1 - t)`` (the flow of a point mass at ``mean``)."""

    def __init__(self, mean):
        super().__init__()
        self.mean = nn.Parameter(torch.as_tensor(mean, dtype=torch.float32))

    def forward(self, x, t):
        return (self.mean - x) / (1 - t).view(-1, *([1] * (x.dim() - 1)))


class Shift(nn.Module):
    """A one-step student ``f(x, s, t) = b`` (the map ``x + (t - s) b``): its samples are noise shifted by ``b``."""

    def __init__(self, b):
        super().__init__()
        self.b = nn.Parameter(torch.as_tensor(b, dtype=torch.float32))

    def forward(self, x, s, t):
        return self.b.expand_as(x)


def test_generator_gradient_is_the_gap_of_clean_predictions_over_its_norm():
    """With point-mass fields the clean predictions are constants, so the term's gradient in ``x`` is exactly
    ``(mean_fake - mean_teacher) / mean|x - mean_teacher|`` per sample, divided by the element count."""
    settings = DmPhaseSettings(steps=1)
    teacher, fake = Field([1.0, -2.0]), Field([0.5, 0.0])
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = generator_loss(x, teacher, fake, settings, torch.Generator().manual_seed(1))
    loss.backward()
    norm = (x.detach() - torch.tensor([1.0, -2.0])).abs().mean(dim=1, keepdim=True)
    expect = (torch.tensor([0.5, 0.0]) - torch.tensor([1.0, -2.0])) / norm / x.numel()
    assert torch.allclose(x.grad, expect, atol=1e-5)
    xt, t = torch.randn(4, 2), torch.rand(4) * 0.9
    assert torch.allclose(clean_prediction(teacher, xt, t), torch.tensor([1.0, -2.0]).expand(4, 2), atol=1e-5)


def test_equal_fields_give_no_gradient_and_the_fake_learns_the_students_samples():
    settings = DmPhaseSettings(steps=1, fake_lr=0.05, fake_updates=1)
    x = (torch.randn(256, 2) + 3.0).requires_grad_(True)
    generator_loss(x, Field([1.0, 1.0]), Field([1.0, 1.0]), settings, torch.Generator().manual_seed(0)).backward()
    assert x.grad.abs().max().item() < 1e-7
    # flow matching on samples around (3, 3): an affine field learns to predict them
    fake = nn.Sequential(nn.Linear(2, 2))
    wrapped = _TimeIgnoring(fake)
    before = fake_loss(wrapped, x, settings, torch.Generator().manual_seed(0)).item()
    opt = torch.optim.Adam(fake.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        opt.zero_grad()
        fake_loss(wrapped, x, settings, g).backward()
        opt.step()
    assert fake_loss(wrapped, x, settings, torch.Generator().manual_seed(0)).item() < 0.5 * before


class _TimeIgnoring(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x)


def test_the_phase_moves_a_shifted_student_onto_the_teachers_distribution():
    """The teacher's data: a point mass at ``m``. A one-step student that shifts noise by ``b`` has the
    distribution ``N(b, I)``; the fake field (started from the teacher, trained on the student's samples) and
    the generator term together move ``b`` toward ``m``."""
    torch.manual_seed(0)
    m = torch.tensor([2.0, -1.0])
    settings = DmPhaseSettings(steps=200, weight=1.0, fake_lr=0.02, fake_updates=2)
    teacher = Field(m.clone())
    dm = DistributionMatching(teacher, settings, torch.device("cpu"))
    student = Shift([0.0, 0.0])
    opt = torch.optim.Adam(student.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(3)
    start = (student.b.detach() - m).norm().item()
    for _ in range(300):
        noise = torch.randn(64, 2, generator=g)
        samples = sample_with_grad("flow_map", student, noise, dm.steps_for(g))
        opt.zero_grad()
        dm.loss(samples, g).backward()
        opt.step()
        dm.update_fake(samples, g)
    assert (student.b.detach() - m).norm().item() < 0.25 * start
    assert all(not p.requires_grad for p in dm.teacher.parameters())


def test_the_phase_state_round_trips_without_pickle():
    settings = DmPhaseSettings(steps=1, fake_updates=1)
    dm = DistributionMatching(Field([1.0, 0.0]), settings, torch.device("cpu"))
    dm.update_fake(torch.randn(16, 2), torch.Generator().manual_seed(0))
    tensors = {}
    skeleton = json.loads(json.dumps(pack_tree(dm.state(), tensors, "distribution")))  # a rank file's JSON
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from the file: no shared storage
    other = DistributionMatching(Field([1.0, 0.0]), settings, torch.device("cpu"))
    other.load_state(unpack_tree(skeleton, tensors))
    assert torch.equal(other.fake.mean, dm.fake.mean)
    x, g1, g2 = torch.randn(16, 2), torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    dm.update_fake(x, g1)
    other.update_fake(x, g2)
    assert torch.equal(other.fake.mean, dm.fake.mean)  # Adam's moments came back too


@pytest.mark.parametrize("objective, time_inputs", [("velocity", 1), ("flow_map", 2)])
def test_sample_with_grad_composes_the_map_or_euler(objective, time_inputs):
    noise = torch.randn(4, 2)
    model = (lambda x, s, t: torch.ones_like(x)) if time_inputs == 2 else (lambda x, t: torch.ones_like(x))
    assert torch.allclose(sample_with_grad(objective, model, noise, 4), noise + 1)
