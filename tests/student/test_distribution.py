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


class FeatureField(Field):
    """``Field`` with a ``blocks`` list whose last entry's output (``[x_t, t]``) the classifier reads."""

    def __init__(self, mean):
        super().__init__(mean)
        self.blocks = nn.ModuleList([nn.Identity()])

    def forward(self, x, t):
        self.blocks[-1](torch.cat([x, t[:, None]], dim=1))
        return super().forward(x, t)


def _phase(real_weight, teacher_mean, real, steps=300):
    torch.manual_seed(0)
    settings = DmPhaseSettings(
        steps=steps, weight=1.0, fake_lr=0.02, classifier_lr=0.02, fake_updates=2, real_weight=real_weight
    )
    dm = DistributionMatching(FeatureField(teacher_mean), settings, torch.device("cpu"), real=real)
    student = Shift(teacher_mean.clone())
    opt = torch.optim.Adam(student.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        samples = sample_with_grad("flow_map", student, torch.randn(64, 2, generator=g), 1)
        opt.zero_grad()
        dm.loss(samples, g).backward()
        opt.step()
        dm.update_fake(samples, g)
    return student.b.detach(), dm


def test_the_real_term_carries_the_student_past_a_wrong_teacher():
    """The teacher's field is the flow of a point mass at 0, the real data sit around ``m``. A one-step
    student that starts on the teacher's distribution stays there under the teacher's term alone; with the
    real-vs-generated term its classifier sees the data, and the student moves toward them."""
    m = torch.tensor([2.0, -1.0])
    real = m + 0.1 * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    alone, _ = _phase(0.0, torch.zeros(2), None)
    assert (alone - torch.zeros(2)).norm() < 0.4  # the teacher's term keeps it where the teacher is
    with_real, dm = _phase(1.0, torch.zeros(2), real)
    assert (with_real - m).norm() < 0.6 * m.norm(), with_real
    assert set(dm.last_classifier) == {"fake_loss", "classifier_loss", "real_accuracy", "fake_accuracy"}
    assert all(not p.requires_grad for p in dm.teacher.parameters())


def test_the_real_term_reaches_only_the_samples():
    """The student's term moves its samples; the fake field and the classifier's head get no gradient from it
    (they are trained by their own update)."""
    settings = DmPhaseSettings(steps=1, real_weight=1.0)
    dm = DistributionMatching(FeatureField(torch.zeros(2)), settings, torch.device("cpu"), real=torch.ones(8, 2))
    x = torch.randn(16, 2, requires_grad=True)
    dm.real_term(x, torch.Generator().manual_seed(0)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in dm.params)
    assert all(p.requires_grad for p in dm.params)


def test_the_real_term_needs_real_images_and_readable_features():
    settings = DmPhaseSettings(steps=1, real_weight=1.0)
    with pytest.raises(ValueError, match="training images"):
        DistributionMatching(FeatureField(torch.zeros(2)), settings, torch.device("cpu"))
    with pytest.raises(ValueError, match="real_weight=0"):
        DistributionMatching(Field(torch.zeros(2)), settings, torch.device("cpu"), real=torch.ones(8, 2))


def test_the_classifier_head_round_trips_with_the_phase_state():
    settings = DmPhaseSettings(steps=1, fake_updates=1, real_weight=1.0)
    real = torch.ones(8, 2)
    dm = DistributionMatching(FeatureField([1.0, 0.0]), settings, torch.device("cpu"), real=real)
    dm.update_fake(torch.randn(16, 2), torch.Generator().manual_seed(0))
    tensors = {}
    skeleton = json.loads(json.dumps(pack_tree(dm.state(), tensors, "distribution")))
    other = DistributionMatching(FeatureField([1.0, 0.0]), settings, torch.device("cpu"), real=real)
    other.load_state(unpack_tree(skeleton, {k: v.clone() for k, v in tensors.items()}))
    for a, b in zip(dm.classifier.head.parameters(), other.classifier.head.parameters()):
        assert torch.equal(a, b)


def test_the_real_side_is_the_training_split_never_the_held_out_one():
    from student.distribution import real_images
    from teachers.settings import DataSettings
    from teachers.train_teacher import load_run_data

    data = DataSettings(name="digits", n_held_out=450)
    real = real_images(data, 0)
    split = load_run_data(data, 0)
    assert torch.equal(real, split.train)
    held = {tuple(r.flatten().tolist()) for r in split.held_out}
    assert not any(tuple(r.flatten().tolist()) in held for r in real[:200])
    assert real_images(None, 0) is None


def test_the_classifier_head_learns_at_its_own_rate():
    settings = DmPhaseSettings(steps=1, real_weight=1.0, fake_lr=1e-4, classifier_lr=3e-3)
    dm = DistributionMatching(FeatureField(torch.zeros(2)), settings, torch.device("cpu"), real=torch.ones(8, 2))
    fake_group, head_group = dm.optimizer.param_groups
    assert fake_group["lr"] == 1e-4 and head_group["lr"] == 3e-3
    assert {id(p) for p in head_group["params"]} == {id(p) for p in dm.classifier.head.parameters()}


def test_the_fake_fields_loss_is_flow_matching_toward_the_samples():
    """``fake_loss`` is ``|| v(x_t, t) - (x - eps) ||^2`` at the same draws of ``t`` and ``eps``."""
    from student.distribution import _noised

    settings = DmPhaseSettings(steps=1)
    field, x = Field([0.5, -1.0]), torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    t, eps, xt = _noised(x, settings, torch.Generator().manual_seed(4))
    expected = (field(xt, t) - (x - eps)).pow(2).mean()
    assert torch.allclose(fake_loss(field, x, settings, torch.Generator().manual_seed(4)), expected)


def test_with_the_real_term_the_fake_field_still_learns_by_the_same_flow_matching():
    """The update with the classifier computes the fake field's flow matching as ``fake_loss`` does, at the
    same first draws (its figure ``fake_loss`` in the phase's records)."""
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    settings = DmPhaseSettings(steps=1, fake_updates=1, real_weight=1.0)
    dm = DistributionMatching(FeatureField([1.0, 0.0]), settings, torch.device("cpu"), real=torch.ones(8, 2))
    expected = fake_loss(FeatureField([1.0, 0.0]), x, settings, torch.Generator().manual_seed(7)).item()
    dm.update_fake(x, torch.Generator().manual_seed(7))
    assert dm.last_classifier["fake_loss"] == pytest.approx(expected, rel=1e-6)
