"""The ensemble teacher (``teachers.ensemble``): its velocity is the mean of its members', and a pool with
``ensemble: true`` couples and makes every guide with that mean field."""

import pytest
import torch
from torch import nn

from cluster.config import ConfigError, parse_config
from teachers.checkpoint import CheckpointError, CheckpointMeta, save_checkpoint
from teachers.ensemble import EnsembleVelocity, TeacherSpec, load_teacher
from teachers.guides import COUPLINGS, GUIDE_RULES
from teachers.nets import build_network
from teachers.teacher_actor import LoadedTeachers, build_block, load_teachers


class Scaled(nn.Module):
    """``v(x, t) = k x + t``: a hand-written field."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, x, t):
        return self.k * x + t[:, None]


def test_the_ensemble_velocity_is_the_mean_of_its_members():
    x = torch.arange(12.0).reshape(6, 2) - 5
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.5])
    got = EnsembleVelocity([Scaled(1.0), Scaled(2.0), Scaled(6.0)])(x, t)
    assert torch.equal(got, 3.0 * x + t[:, None])  # (1 + 2 + 6) / 3 = 3, t three times over three
    assert torch.equal(EnsembleVelocity([Scaled(5.0)])(x, t), 5.0 * x + t[:, None])


def _members(tmp_path, hiddens=(16, 32, 24), shape=(2,)):
    """Native teachers of different widths and seeds, saved as checkpoints; their paths."""
    paths = []
    for i, hidden in enumerate(hiddens):
        torch.manual_seed(100 + i)
        kwargs = {"hidden": hidden, "depth": 1, "time_embed_dim": 8}
        net = build_network("mlp", shape, **kwargs)
        save_checkpoint(
            tmp_path / f"member-{i}", net, CheckpointMeta(arch="mlp", arch_kwargs=kwargs, data_shape=list(shape))
        )
        paths.append(str(tmp_path / f"member-{i}"))
    return paths


def _config(tmp_path, checkpoints, rule="trajectory", coupling="generated", **pool):
    return parse_config(
        {
            "name": "ens",
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp", "hidden": 16, "depth": 1, "time_embed_dim": 8}},
            "guides": {
                "path": "cubic",
                "rule": rule,
                "coupling": coupling,
                "coupling_solver": "rk4",
                "coupling_steps": 3,
                "solve_steps": 2,
                "block_size": 8,
                "num_samples": 16,
            },
            "teachers": [{"name": "ens", "checkpoints": checkpoints, **pool}],
        }
    )


@pytest.mark.parametrize("coupling", COUPLINGS.names)
@pytest.mark.parametrize("rule", GUIDE_RULES.names)
def test_an_ensemble_pool_makes_its_guides_with_the_mean_field(tmp_path, rule, coupling):
    paths = _members(tmp_path)
    cfg = _config(tmp_path, paths, rule, coupling, ensemble=True)
    teachers = load_teachers(cfg.teacher_pool[0], cfg.guides.n_guides, (2,))
    assert teachers.guides == [teachers.coupling] * 2  # one teacher couples and makes both guides
    assert teachers.ids == ["ens:ensemble(member-0+member-1+member-2)"] * 2
    members = [load_teacher(TeacherSpec((p,)), (2,)) for p in paths]

    def mean(x, t):
        return sum(m(x, t) for m in members) / len(members)

    by_hand = LoadedTeachers(coupling=mean, guides=[mean, mean], ids=teachers.ids, versions=teachers.versions)
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    got, want = build_block(cfg, data, teachers, 1, "t"), build_block(cfg, data, by_hand, 1, "t")
    for a, b in zip([got.x0, got.x1, *got.guides], [want.x0, want.x1, *want.guides]):
        torch.testing.assert_close(a, b)
    # and not the first member's field alone (what the pool makes without ensemble: true)
    alone = LoadedTeachers(coupling=members[0], guides=[members[0]] * 2, ids=teachers.ids, versions=teachers.versions)
    first = build_block(cfg, data, alone, 1, "t")
    assert not all(torch.allclose(a, b) for a, b in zip(got.guides, first.guides))


def test_ensemble_versions_hash_every_member_and_a_single_pool_is_as_before(tmp_path):
    paths = _members(tmp_path)
    single = load_teachers(_config(tmp_path, paths[:1]).teacher_pool[0], 2, (2,))
    assert single.ids == ["ens:member-0"] * 2 and single.guides == [single.coupling] * 2
    two = load_teachers(_config(tmp_path, paths[:2], ensemble=True).teacher_pool[0], 2, (2,))
    three = load_teachers(_config(tmp_path, paths, ensemble=True).teacher_pool[0], 2, (2,))
    assert len({single.versions[0], two.versions[0], three.versions[0]}) == 3


def test_members_must_fit_the_data_shape(tmp_path):
    paths = _members(tmp_path) + _members(tmp_path / "wide", hiddens=(16,), shape=(3,))
    with pytest.raises(CheckpointError, match="wide/member-0"):
        load_teacher(TeacherSpec(tuple(paths)), (2,))


def test_an_ensemble_of_one_checkpoint_is_a_config_error_naming_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"teachers\[ens\]\.ensemble.*list its members.*ensemble: false"):
        _config(tmp_path, ["self"], ensemble=True)
    # three members on a cubic path (two guides) are one teacher, not one checkpoint per guide
    cfg = _config(tmp_path, ["self", "self:1", "self:2"], ensemble=True)
    assert cfg.teacher_pool[0].guide_teachers(2) == [TeacherSpec(("self", "self:1", "self:2"))] * 2
    with pytest.raises(ConfigError, match="needs 1 or 2"):
        _config(tmp_path, ["self", "self:1", "self:2"])
