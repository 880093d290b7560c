"""Configs: shipped files validate; each kind of mistake names the key and what is allowed."""

from pathlib import Path

import pytest

from cluster.config import ConfigError, apply_overrides, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["toy2d.yaml", "digits.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.name == name.split(".")[0]


def _raw():
    return {"name": "x", "data": {"name": "digits"}, "teacher": {"network": {"arch": "unet"}}}


def test_unknown_key_lists_allowed_keys():
    raw = _raw()
    raw["teacher"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"teacher.learning_rate: unknown key; allowed keys here: .*\blr\b"):
        parse_config(raw)


def test_unknown_top_level_key():
    raw = _raw()
    raw["studnet"] = {}
    with pytest.raises(ConfigError, match=r"studnet: unknown key; allowed keys here: ") as err:
        parse_config(raw)
    allowed = str(err.value).split("allowed keys here: ")[1].split(", ")
    assert {"data", "eval", "name", "teacher", "store", "guides", "teachers"} <= set(allowed)


def test_bad_choice_names_allowed_values():
    raw = _raw()
    raw["teacher"]["network"]["arch"] = "transformer"
    with pytest.raises(
        ConfigError, match=r"teacher.network.arch: Input should be 'mlp' or 'unet' \(got 'transformer'\)"
    ):
        parse_config(raw)


def test_bad_teacher_convention_names_the_key_and_the_known_ones():
    raw = _raw()
    raw["teachers"] = [{"name": "hf", "checkpoints": ["models/unet"], "convention": "epsilon"}]
    with pytest.raises(ConfigError, match=r"teachers.0.convention: Input should be 'flow_match' \(got 'epsilon'\)"):
        parse_config(raw)
    raw["teachers"][0]["convention"] = "flow_match"
    assert parse_config(raw).teacher_pool[0].convention == "flow_match"


def test_wrong_type():
    raw = _raw()
    raw["teacher"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"teacher.steps: .*integer.*\(got 'many'\)"):
        parse_config(raw)


def test_out_of_range():
    raw = _raw()
    raw["teacher"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"teacher.lr: Input should be greater than 0"):
        parse_config(raw)


def test_bad_eval_steps():
    raw = _raw()
    raw["eval"] = {"steps": [1, 0]}
    with pytest.raises(ConfigError, match=r"eval.steps: .*step counts >= 1"):
        parse_config(raw)


def test_missing_required_key():
    raw = _raw()
    del raw["data"]
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        parse_config(raw)


def test_overrides_apply_and_are_validated(tmp_path):
    cfg = load_config(CONFIGS / "digits.yaml", ["teacher.lr=3e-4", "eval.steps=[1,4]"])
    assert cfg.teacher_training.lr == 3e-4 and cfg.eval.steps == [1, 4]
    with pytest.raises(ConfigError, match=r"teacher.lrr: unknown key"):
        load_config(CONFIGS / "digits.yaml", ["teacher.lrr=3e-4"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(CONFIGS / "digits.yaml", ["teacher.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_a_second_teacher_keeps_the_runs_data_split():
    """``self:K`` trains with seed + K but must never see the images the run holds out for evaluation."""
    import torch

    from cluster.teacher_stage import teacher_training_config
    from teachers.train_teacher import load_run_data

    cfg = load_config(CONFIGS / "digits.yaml", ["seed=3"])
    second = teacher_training_config(cfg, 4)
    assert second.seed == 4 and second.data.split_seed == 3
    assert torch.equal(load_run_data(second.data, second.seed).held_out, load_run_data(cfg.data, cfg.seed).held_out)
    other = load_config(CONFIGS / "digits.yaml", ["seed=4"])
    assert not torch.equal(load_run_data(other.data, other.seed).held_out, load_run_data(cfg.data, cfg.seed).held_out)


def test_an_elastic_student_pool_is_checked_before_any_work():
    base = {"name": "e", "data": {"name": "eight_gaussians"}, "teacher": {"network": {"arch": "mlp"}}}
    cfg = parse_config({**base, "student": {"workers": [1, 3], "zero_stage": 1, "resize_check_s": 5}})
    assert cfg.student.elastic and (cfg.student.min_workers, cfg.student.max_workers) == (1, 3)
    assert not parse_config({**base, "student": {"workers": [2, 2]}}).student.elastic
    for bad, words in (
        ([3, 1], "student.workers"),
        ([0, 2], "student.workers"),
        ({"workers": [1, 2], "zero_stage": 2}, "zero_stage 0 or 1"),
        ({"workers": [1, 2], "source": "parquet", "parquet_dir": "x"}, "needs source 'store'"),
    ):
        student = bad if isinstance(bad, dict) else {"workers": bad}
        with pytest.raises(ConfigError, match=words):
            parse_config({**base, "student": student})


def test_yaml_keys_differ_from_the_code_names_only_in_python():
    """``teacher``/``teachers``/``student.finetune`` are ``teacher_training``/``teacher_pool``/``dm_phase`` in the
    code; the YAML key is what is read, written and listed in messages."""
    raw = _raw()
    raw["teachers"] = [{"name": "t", "checkpoints": ["self"]}]
    raw["student"] = {"steps": 50, "finetune": {"steps": 10}}
    cfg = parse_config(raw)
    assert cfg.teacher_training.network.arch == "unet" and cfg.teacher_pool[0].name == "t"
    assert cfg.student.dm_phase.steps == 10
    dumped = cfg.model_dump(mode="json")
    assert {"teacher", "teachers"} <= set(dumped) and not {"teacher_training", "teacher_pool"} & set(dumped)
    assert "finetune" in dumped["student"] and "dm_phase" not in dumped["student"]
    assert parse_config(dumped) == cfg
    raw["student"]["finetun"] = {}
    with pytest.raises(ConfigError, match=r"student.finetun: unknown key; allowed keys here: .*\bfinetune\b") as err:
        parse_config(raw)
    assert "dm_phase" not in str(err.value)
