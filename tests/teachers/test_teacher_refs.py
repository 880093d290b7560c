"""``self`` / ``self:K`` parsed in one place, and the default teacher pool chosen in one place (the config)."""

import pytest

from cluster.config import ConfigError, TeacherPoolSettings, parse_config
from teachers.teacher_refs import own_teacher_index, own_teacher_refs

BASE = {
    "name": "refs",
    "data": {"name": "eight_gaussians"},
    "teacher": {"network": {"arch": "mlp", "hidden": 16, "depth": 1, "time_embed_dim": 8}},
}


def test_self_and_self_k_name_the_run_s_own_teachers():
    assert own_teacher_index("self") == 0
    assert own_teacher_index("self:3") == 3
    assert own_teacher_index("runs/other/teacher") is None
    assert own_teacher_index("selfish") is None


@pytest.mark.parametrize("ref", ["self:0", "self:x", "self:", "self:-1"])
def test_a_malformed_self_k_is_a_config_error(ref):
    with pytest.raises(ConfigError, match="expected self or self:K with K >= 1"):
        own_teacher_index(ref)


def test_own_teacher_refs_are_each_once_and_sorted():
    pools = [
        TeacherPoolSettings(name="a", checkpoints=["self:2", "path/x"]),
        TeacherPoolSettings(name="b", checkpoints=["self", "self:2"]),
    ]
    assert own_teacher_refs(pools) == ["self", "self:2"]


@pytest.mark.parametrize("teachers", [None, []])
def test_no_pool_configured_gives_one_pool_on_the_run_s_own_teacher(teachers):
    raw = dict(BASE) if teachers is None else {**BASE, "teachers": teachers}
    assert parse_config(raw).teacher_pool == [TeacherPoolSettings(name="teacher", checkpoints=["self"])]


def test_configured_pools_are_kept():
    pools = [{"name": "p", "checkpoints": ["a/b"], "replicas": 2}]
    assert parse_config({**BASE, "teachers": pools}).teacher_pool == [TeacherPoolSettings(**pools[0])]
