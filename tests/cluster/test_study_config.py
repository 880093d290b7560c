"""Study files: the shipped ones validate (every run and teacher configuration they make); each kind of mistake
is an error that names the variant or key before any work."""

from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError
from cluster.study_config import load_study

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["study_toy2d.yaml", "study_digits.yaml"])
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_studies_validate(name, quick):
    study, _, runs = load_study(CONFIGS / name, quick)
    seeds = study.quick.seeds if quick else study.seeds
    assert len(runs) == len(seeds) * sum(len(v.objectives) for v in study.variants)
    assert len({r.cfg.name for r in runs}) == len(runs)
    for r in runs:  # only configuration differs: the same student budget and guide count in every run
        assert r.cfg.student.objective == r.objective and r.cfg.seed == r.seed
        assert (r.cfg.student.steps, r.cfg.guides.num_samples) == (runs[0].cfg.student.steps,
                                                                   runs[0].cfg.guides.num_samples)
        assert len(r.cfg.teachers) == 1 and len(r.cfg.teachers[0].checkpoints) == len(r.variant.teachers)
    if not quick:
        assert len(seeds) >= 3


def _study(tmp_path, **changes):
    raw = yaml.safe_load((CONFIGS / "study_toy2d.yaml").read_text())
    raw["base"] = str(CONFIGS / "toy2d.yaml")
    raw.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_teacher_of_a_variant_is_named(tmp_path):
    variants = [{"name": "v", "label": "v", "teachers": ["nope"]}]
    with pytest.raises(ConfigError, match=r"variant 'v': unknown teachers \['nope'\]; known: \['rf1'"):
        load_study(_study(tmp_path, variants=variants, claims=[]))


def test_bad_override_names_the_variant_and_key(tmp_path):
    variants = [{"name": "v", "label": "v", "teachers": ["rf1"], "set": ["guides.rule=zigzag"]}]
    with pytest.raises(ConfigError) as err:
        load_study(_study(tmp_path, variants=variants, claims=[]))
    assert "variant 'v'" in str(err.value) and "guides.rule" in str(err.value) and "euler_step" in str(err.value)


def test_unknown_study_key_lists_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match="seedz: unknown key; allowed keys here: .*seeds"):
        load_study(_study(tmp_path, seedz=[1]))


def test_claim_must_name_variants(tmp_path):
    claims = [{"text": "x", "better": ["cubic-two/velocityy"], "than": ["rf-generated"]}]
    with pytest.raises(ConfigError, match="cubic-two/velocityy"):
        load_study(_study(tmp_path, claims=claims))


def test_missing_base_is_named(tmp_path):
    with pytest.raises(ConfigError, match="base run configuration nowhere.yaml does not exist"):
        load_study(_study(tmp_path, base="nowhere.yaml"))


@pytest.mark.parametrize(("method", "expected"), [
    (dict(path="cubic", coupling="inversion", checkpoints=["self", "self:1"], rounds=0), "cubic-two/flow_map"),
    (dict(path="cubic", coupling="inversion", checkpoints=["self"], rounds=0), "cubic-same/flow_map"),
    (dict(path="linear", coupling="generated", checkpoints=["self"], rounds=0), "rf-generated/flow_map"),
    (dict(path="linear", coupling="generated", checkpoints=["self"], rounds=1), "rf2-generated/flow_map"),
    (dict(path="cubic", coupling="inversion", checkpoints=["self"], rounds=1), None),  # not in the matrix
])
def test_default_row_is_the_base_method_with_its_teacher_rounds(method, expected):
    from cluster.study import _default_rows

    study, base, runs = load_study(CONFIGS / "study_digits.yaml")
    base = {**base, "teacher": {**base["teacher"], "reflow_rounds": method["rounds"]},
            "guides": {**base["guides"], "path": method["path"], "coupling": method["coupling"],
                       "rule": "euler_step"},
            "student": {**base["student"], "objective": "flow_map"},
            "teachers": [{**base["teachers"][0], "checkpoints": method["checkpoints"]}]}
    assert _default_rows(study, base, runs, False)[0] == expected
