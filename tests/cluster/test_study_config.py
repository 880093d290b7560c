"""Study files: the shipped ones validate (every run and teacher configuration they make); each kind of mistake
is an error that names the variant or key before any work."""

import json
from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError
from cluster.study_config import load_study

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "name",
    [
        "study_toy2d.yaml",
        "study_digits.yaml",
        "study_digits_cpu.yaml",
        "study_digits_gpu.yaml",
        "study_digits_quality.yaml",
    ],
)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_studies_validate(name, quick):
    study, _, runs = load_study(CONFIGS / name, quick)
    seeds = study.quick.seeds if quick else study.seeds
    assert len(runs) == len(seeds) * sum(len(v.objectives) for v in study.variants)
    assert len({r.cfg.name for r in runs}) == len(runs)
    for r in runs:  # only configuration differs: the same student budget and guide count in every run
        assert r.cfg.student.objective == r.objective and r.cfg.seed == r.seed
        assert (r.cfg.student.steps, r.cfg.guides.num_samples) == (
            runs[0].cfg.student.steps,
            runs[0].cfg.guides.num_samples,
        )
        assert len(r.cfg.teacher_pool) == 1 and len(r.cfg.teacher_pool[0].checkpoints) == len(r.variant.teachers)
        assert r.cfg.teacher_pool[0].ensemble == r.variant.ensemble
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


def test_an_ensemble_variant_is_one_teacher_of_its_members(tmp_path):
    variants = [
        {"name": "ens", "label": "ens", "teachers": ["rf1", "rf1b", "rf2"], "ensemble": True},
        {"name": "two", "label": "two", "teachers": ["rf1", "rf1b"]},
    ]
    _, _, runs = load_study(_study(tmp_path, variants=variants, claims=[]))
    pools = {r.variant.name: r.cfg.teacher_pool[0] for r in runs}
    assert pools["ens"].ensemble and [Path(c).name for c in pools["ens"].checkpoints] == ["rf1", "rf1b", "rf2"]
    assert not pools["two"].ensemble  # two teachers without it: one per guide, as before


def test_three_teachers_without_ensemble_are_named(tmp_path):
    variants = [{"name": "v", "label": "v", "teachers": ["rf1", "rf1b", "rf2"]}]
    with pytest.raises(ConfigError, match=r"variant 'v': 3 teachers, .* at most 2 \(set ensemble: true"):
        load_study(_study(tmp_path, variants=variants, claims=[]))


@pytest.mark.parametrize("teachers", [["rf1"], ["rf1", "rf1"]])
def test_an_ensemble_of_fewer_than_two_different_teachers_is_named(tmp_path, teachers):
    variants = [{"name": "v", "label": "v", "teachers": teachers, "ensemble": True}]
    with pytest.raises(ConfigError, match=r"variant 'v': ensemble: true averages 2 or 3 different teachers"):
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


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (dict(path="cubic", coupling="inversion", checkpoints=["self", "self:1"], rounds=0), "cubic-two/flow_map"),
        (dict(path="cubic", coupling="inversion", checkpoints=["self"], rounds=0), "cubic-same/flow_map"),
        (dict(path="linear", coupling="generated", checkpoints=["self"], rounds=0), "rf-generated/flow_map"),
        (dict(path="linear", coupling="generated", checkpoints=["self"], rounds=1), "rf2-generated/flow_map"),
        (dict(path="cubic", coupling="inversion", checkpoints=["self"], rounds=1), None),  # not in the matrix
    ],
)
def test_default_row_is_the_base_method_with_its_teacher_rounds(method, expected):
    from cluster.study import _default_rows

    study, base, runs = load_study(CONFIGS / "study_digits.yaml")
    base = {
        **base,
        "teacher": {**base["teacher"], "reflow_rounds": method["rounds"]},
        "guides": {**base["guides"], "path": method["path"], "coupling": method["coupling"], "rule": "euler_step"},
        "student": {**base["student"], "objective": "flow_map"},
        "teachers": [{**base["teachers"][0], "checkpoints": method["checkpoints"]}],
    }
    assert _default_rows(study, base, runs, False)[0] == expected


def test_the_cpu_study_is_the_default_job_and_the_gpu_study_extends_it():
    cpu, base, cpu_runs = load_study(CONFIGS / "study_digits_cpu.yaml")
    gpu, _, gpu_runs = load_study(CONFIGS / "study_digits_gpu.yaml")
    default = next(r.cfg for r in cpu_runs if r.variant.name == "trajectory")
    assert default.student.steps == base["student"]["steps"] and default.guides.rule == "trajectory"
    assert (gpu.variants, gpu.screen, gpu.claims) == (cpu.variants, cpu.screen, cpu.claims)
    assert gpu.name == "digits-gpu" and [r.key for r in gpu_runs] == [r.key for r in cpu_runs]
    assert gpu_runs[0].cfg.student.batch_size == 256 and gpu_runs[0].cfg.teacher_training.network.channels == 64
    assert cpu.screen.seeds == [0] and set(cpu.screen.always) <= {v.name for v in cpu.variants}


def test_extends_names_a_missing_or_circular_parent(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    with pytest.raises(ConfigError, match="extends b.yaml, which does not exist"):
        load_study(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="which extends it back"):
        load_study(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("screen", "message"),
    [
        ({"seeds": [7]}, r"screen.seeds \[7\] are not among the study's seeds \[0, 1, 2\]"),
        ({"always": ["nope"]}, r"screen.always: unknown variants \['nope'\]"),
        ({"keep": -1}, r"screen.keep"),
    ],
)
def test_a_bad_screen_is_named(tmp_path, screen, message):
    with pytest.raises(ConfigError, match=message):
        load_study(_study(tmp_path, screen=screen))


def test_a_screened_study_plans_its_finalists_only_when_the_screen_is_finished(tmp_path):
    from cluster.study import RESULT_FILE, TEACHER_EVAL_FILE, collect_results, plan_runs
    from cluster.study_claims import finalists
    from cluster.study_config import teacher_path

    variants = [{"name": n, "label": n, "teachers": ["rf1"], "objectives": ["flow_map"]} for n in ("a", "b", "c")]
    path = _study(
        tmp_path,
        variants=variants,
        claims=[],
        seeds=[0, 1, 2],
        run_dir=str(tmp_path / "runs"),
        screen={"seeds": [0], "keep": 1, "steps": [1], "always": ["c"]},
    )
    study, base, runs = load_study(path)
    planned, screen = plan_runs(study, base, runs, False, str(path))
    assert [r.key for r in planned] == ["a-flow_map-s0", "b-flow_map-s0", "c-flow_map-s0"]
    assert screen["finalists"] is None
    assert plan_runs(study, base, runs, True, str(path)) == (runs, None)  # --quick screens nothing

    row = lambda label, steps, w: {
        "label": label,
        "steps": steps,
        "nfe": steps or 90,
        "sliced_w2": w,  # noqa: E731
        "energy": w,
    }
    teacher = teacher_path(study, "rf1", 0, False)
    teacher.mkdir(parents=True)
    (teacher / TEACHER_EVAL_FILE).write_text(
        json.dumps(
            {
                "key": "rf1",
                "seed": 0,
                "rows": [row("euler", 1, 2.0), row("adaptive", None, 0.5)],
                "reference_rows": [],
                "floor": {"sliced_w2": 0.01, "energy": 0.01},
            }
        )
    )
    for r, w in zip(planned, (0.9, 0.7, 1.5)):  # b is the screen's best; c is always kept
        r.cfg.run_path.mkdir(parents=True)
        (r.cfg.run_path / RESULT_FILE).write_text(
            json.dumps(
                {
                    "key": r.key,
                    "variant": r.variant.name,
                    "objective": r.objective,
                    "seed": r.seed,
                    "teachers": ["rf1"],
                    "rows": [row("s", 1, w)],
                    "nfe_per_record": 32,
                    "wall_seconds": 1.0,
                }
            )
        )
        if r.variant.name == "b":
            assert plan_runs(study, base, runs, False, str(path))[1]["finalists"] is None  # not all finished yet
    planned, screen = plan_runs(study, base, runs, False, str(path))
    assert screen["finalists"] == ["b/flow_map", "c/flow_map"]
    assert [k for k, _ in screen["ranking"]] == ["b/flow_map", "a/flow_map", "c/flow_map"]
    assert screen["ranking"][0][1] == pytest.approx(0.7 / 0.5)
    assert [r.key for r in planned] == [
        "a-flow_map-s0",
        "b-flow_map-s0",
        "c-flow_map-s0",
        "b-flow_map-s1",
        "c-flow_map-s1",
        "b-flow_map-s2",
        "c-flow_map-s2",
    ]
    a_file = planned[0].cfg.run_path / RESULT_FILE  # a later change to a screen run does not move the finalists
    text = a_file.read_text()
    assert '"sliced_w2": 0.9' in text
    a_file.write_text(text.replace('"sliced_w2": 0.9', '"sliced_w2": 0.1'))  # a would now rank first
    assert finalists(collect_results(study, base, planned[:3], False, str(path)), screen)[0] == [
        "a/flow_map",
        "c/flow_map",
    ]
    assert plan_runs(study, base, runs, False, str(path))[1]["finalists"] == ["b/flow_map", "c/flow_map"]


def test_screen_steps_must_be_steps_every_run_evaluates(tmp_path):
    with pytest.raises(ConfigError, match=r"screen.steps \[3\] are not among variant 'rf-generated'"):
        load_study(_study(tmp_path, screen={"seeds": [0], "steps": [1, 3]}))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="is not a mapping"):
        load_study(tmp_path / "list.yaml")


def test_a_study_takes_its_metric_kind_from_the_data_source(tmp_path):
    """synthetic-32 is an image source though its name is not ``digits`` and no ``data.shape`` is set: its
    report reads the image metrics (the vector ones made a KeyError)."""
    from cluster.study import collect_results

    raw = yaml.safe_load((CONFIGS / "study_toy2d.yaml").read_text())
    path = _study(
        tmp_path,
        run_dir=str(tmp_path / "runs"),
        set=raw["set"] + ["data.name=synthetic-32", "data.n_train=8", "data.n_held_out=4"],
    )
    study, base, runs = load_study(path)
    assert runs[0].cfg.data.shape is None
    results = collect_results(study, base, runs, False, str(path))
    assert (results["data"], results["metric_kind"]) == ("synthetic-32", "image")
    toy = load_study(_study(tmp_path, run_dir=str(tmp_path / "runs")))
    assert collect_results(*toy, False, str(path))["metric_kind"] == "vector"


def test_an_ensemble_row_is_not_the_default_of_a_base_with_two_teachers_one_per_guide():
    from cluster.study import _default_rows

    study, base, runs = load_study(CONFIGS / "study_digits_quality.yaml")
    assert _default_rows(study, base, runs, False)[0] == "default/flow_map"
    two = {**base, "teachers": [{**base["teachers"][0], "checkpoints": ["self", "self:1"]}]}
    assert _default_rows(study, two, runs, False)[0] is None  # ensemble-2 has two teachers, but is one teacher
