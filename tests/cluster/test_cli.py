"""The installed ``bezier-distill`` command, end to end on a small toy config."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# the console script installed beside the interpreter running the tests (the venv's bin/)
SCRIPT = Path(sys.executable).parent / "bezier-distill"
if not SCRIPT.exists():
    SCRIPT = Path(shutil.which("bezier-distill") or "bezier-distill")


def run(*args, cwd=None):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cfg = yaml.safe_load(open("configs/toy2d.yaml"))
    cfg.update(run_dir=str(tmp))
    (tmp / "toy.yaml").write_text(yaml.safe_dump(cfg))
    out = run(
        "train-teacher",
        str(tmp / "toy.yaml"),
        "--set",
        "teacher.steps=300",
        "--set",
        "data.n_train=3000",
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    return tmp / "toy2d" / "teacher"


def test_train_teacher_writes_checkpoint_and_report(trained):
    for name in ("model.safetensors", "model.json", "config.yaml", "metrics.jsonl", "train_report.json", "loss.png"):
        assert (trained / name).is_file(), name
    report = json.loads((trained / "train_report.json").read_text())
    assert report["rectification"] == 1 and report["rounds"][0]["final_loss"] > 0
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 300


def test_eval_writes_table(trained, tmp_path):
    out = run(
        "eval",
        str(trained),
        "--steps",
        "1,4",
        "--solver",
        "heun",
        "--n-samples",
        "500",
        "--out",
        str(tmp_path / "e.json"),
    )
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "e.json").read_text())
    assert [r["steps"] for r in table["rows"]] == [1, 4] and [r["nfe"] for r in table["rows"]] == [2, 8]
    assert "sliced_w2" in table["floor"] and "real-vs-real floor" in out.stdout


def test_sample_writes_png(trained, tmp_path):
    out = run("sample", str(trained), "--steps", "1,8", "--n", "500", "--out", str(tmp_path / "s.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_config_fails_before_work(tmp_path):
    out = run(
        "train-teacher", "configs/toy2d.yaml", "--set", "teacher.network.arch=cnn", "--set", f"run_dir={tmp_path}"
    )
    assert out.returncode == 2
    assert "teacher.network.arch: Input should be 'mlp' or 'unet'" in out.stderr
    assert not any(tmp_path.iterdir())


def test_bad_checkpoint_is_named(tmp_path):
    out = run("eval", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "checkpoint directory does not exist" in out.stderr


def test_run_refuses_a_bad_student_config_before_any_work(tmp_path):
    out = run(
        "run",
        "configs/toy2d.yaml",
        "--set",
        "student.objective=score",
        "--set",
        "student.zero_stag=1",
        "--set",
        f"run_dir={tmp_path}",
    )
    assert out.returncode == 2
    assert (
        "student.objective: Input should be 'velocity', 'flow_map', 'flow_map_shortcut', 'flow_map_meanflow', "
        "'flow_map_tri' or 'flow_map_forward' (got 'score')" in out.stderr
    ), out.stderr
    assert "student.zero_stag: unknown key; allowed keys here:" in out.stderr and "zero_stage" in out.stderr
    assert not any(tmp_path.iterdir())


def test_study_refuses_a_bad_variant_before_any_work(tmp_path):
    study = yaml.safe_load(open("configs/study_toy2d.yaml"))
    study.update(run_dir=str(tmp_path / "runs"), base=str(Path("configs/toy2d.yaml").resolve()))  # copied elsewhere
    study["variants"][0]["set"].append("student.objective_share=0.5")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = run("study", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "docs"))
    assert out.returncode == 2, out.stderr
    assert "variant 'rf-generated'" in out.stderr and "student.objective_share: unknown key" in out.stderr
    assert "allowed keys here:" in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "docs").exists()
