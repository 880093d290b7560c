"""Relative paths resolve once, on the driver, against the directory the command was started in; under
``ray job submit --working-dir`` outputs go to ``$BEZIER_DISTILL_HOME`` (the job's directory is a copy that
vanishes). The real ``ray job submit`` journey runs in CI (.ci/run); these pin the rules."""

import json
from pathlib import Path


from cluster.config import load_config, resolve_run_paths
from cluster.paths import in_temporary_job_dir

REPO = Path(__file__).resolve().parents[2]


def _write_config(where: Path, **extra) -> Path:
    text = (REPO / "configs" / "toy2d.yaml").read_text()
    path = where / "toy.yaml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_starting_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "cfgs").mkdir()
    config = _write_config(tmp_path / "cfgs")
    cfg = load_config(
        "cfgs/toy.yaml",
        [
            "data.name=file",
            "data.path=data/x.npy",
            "teachers=[{name: t, checkpoints: [self, other/teacher]}]",
            "guides.path=cubic",
            "student.storage_path=train-out",
        ],
    )
    assert config.is_file()
    assert cfg.run_path == tmp_path / "runs" / "toy2d" and cfg.run_path.is_absolute()
    assert cfg.data.path == str(tmp_path / "data" / "x.npy")
    assert cfg.teacher_pool[0].checkpoints == ["self", str(tmp_path / "other" / "teacher")]
    assert cfg.student.storage_path == str(tmp_path / "train-out")
    assert resolve_run_paths(cfg) == cfg  # idempotent: a second resolution changes nothing


def test_absolute_paths_and_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        REPO / "configs" / "toy2d.yaml", [f"run_dir={tmp_path / 'abs'}", "student.storage_path=s3://bucket/train"]
    )
    assert cfg.run_dir == str(tmp_path / "abs") and cfg.student.storage_path == "s3://bucket/train"


def test_under_a_job_with_a_working_dir_outputs_go_home(tmp_path, monkeypatch):
    copy, home = tmp_path / "ray_tmp_copy", tmp_path / "home"
    copy.mkdir()
    (home / "runs" / "earlier" / "teacher").mkdir(parents=True)
    (copy / "shipped").mkdir()
    monkeypatch.chdir(copy)
    # what Ray's job supervisor sets for the entrypoint of `ray job submit --working-dir .`
    monkeypatch.setenv(
        "RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}})
    )
    monkeypatch.setenv("BEZIER_DISTILL_HOME", str(home))
    assert in_temporary_job_dir()
    cfg = load_config(
        REPO / "configs" / "toy2d.yaml",
        [
            "teachers=[{name: t, checkpoints: [shipped, runs/earlier/teacher]}, {name: u, checkpoints: [missing]}]",
            "guides.path=cubic",
        ],
    )
    assert cfg.run_path == home / "runs" / "toy2d"
    # inputs: the uploaded copy first, then the home (an earlier job's output), else where the user said
    assert cfg.teacher_pool[0].checkpoints == [str(copy / "shipped"), str(home / "runs" / "earlier" / "teacher")]
    assert cfg.teacher_pool[1].checkpoints == [str(copy / "missing")]


def test_a_job_without_a_working_dir_keeps_its_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))
    assert not in_temporary_job_dir()
    assert load_config(REPO / "configs" / "toy2d.yaml").run_path == tmp_path / "runs" / "toy2d"
