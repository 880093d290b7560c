"""A run's folder is never half-overwritten, and a run stopped by a signal cleans up and says so."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.chaos import redis_process
from cluster.config import load_config
from cluster.job import RunExistsError, _clear_outputs, _start_afresh, run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "bezier-distill"


def _finished_run(tmp_path) -> Path:
    folder = tmp_path / "runs" / "toy2d"
    (folder / "teacher").mkdir(parents=True)
    (folder / "teacher" / "model.json").write_text("{}")
    (folder / "student").mkdir()
    (folder / "report.json").write_text(json.dumps({"run": "toy2d", "status": "finished"}))
    (folder / "config.yaml").write_text("old: true\n")
    return folder


def test_a_finished_run_is_refused_before_any_work_and_overwrite_keeps_its_teachers(tmp_path):
    folder = _finished_run(tmp_path)
    cfg = load_config(REPO / "configs" / "toy2d.yaml", [f"run_dir={tmp_path / 'runs'}"])
    with pytest.raises(RunExistsError, match=r"already finished in .*--overwrite.*--set name=NEW"):
        run(cfg)
    assert (folder / "config.yaml").read_text() == "old: true\n"  # untouched
    out = subprocess.run(
        [str(SCRIPT), "run", str(REPO / "configs" / "toy2d.yaml"), "--set", f"run_dir={tmp_path / 'runs'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "already finished" in out.stderr and "Traceback" not in out.stderr
    assert _start_afresh(cfg, overwrite=True)  # not refused, and there is something to clear
    _clear_outputs(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["teacher"]


@pytest.mark.slow
def test_sigterm_stops_every_process_and_the_report_says_interrupted(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            str(SCRIPT),
            "run",
            str(REPO / "configs" / "smoke.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={runs}",
            "--set",
            "teacher.steps=30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines, deadline = [], time.monotonic() + 300
    for line in proc.stdout:  # wait until the store and the teacher actors are up
        lines.append(line)
        if "teacher actor(s)" in line or time.monotonic() > deadline:
            break
    assert any("teacher actor(s)" in ln for ln in lines), "".join(lines)
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, "".join(lines) + rest
    report = json.loads((runs / "smoke" / "report.json").read_text())
    assert report["status"] == "interrupted" and report["error"].startswith("KeyboardInterrupt")
    time.sleep(2.0)
    assert redis_process(runs / "smoke") is None, "the run's redis-server was left behind"
    left = subprocess.run(["pgrep", "-af", str(runs)], capture_output=True, text=True).stdout
    assert not left.strip(), f"processes left behind: {left}"
