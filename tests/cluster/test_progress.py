"""The job log's live ``student`` line: its own line every ``STUDENT_LINE_S`` (here shortened) while the pool
trains, before and after production ends, with figures from the ranks' metrics and the store; ``status.json``
beside it and ``bezier-distill status`` reading it back."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import ray

from cluster import guide_stage
from cluster.config import parse_config
from cluster.progress import last_metrics, student_line, student_status

SCRIPT = Path(sys.executable).parent / "bezier-distill"


@ray.remote
class _Controller:
    """The controller's ``report`` as the progress thread reads it: production finishes on the third call."""

    def __init__(self):
        self.made = 0

    def calls(self):
        return self.made

    def report(self):
        self.made += 1
        done = self.made >= 3
        return {
            "finished": done,
            "live_teachers": 0 if done else 1,
            "workers": {},
            "queued": 0,
            "store": {"produced": 512 if done else 128, "backlog": 64, "undelivered": 0 if done else 64, "pending": 64},
        }


def test_a_student_line_on_its_own_line_every_period_until_the_pool_ends(ray_cluster, tmp_path, monkeypatch, caplog):
    cfg = parse_config(
        {
            "name": "lines",
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16}},
            "guides": {"num_samples": 512, "block_size": 64},
            "student": {"steps": 300},
        }
    )
    cfg.run_path.mkdir(parents=True)
    (cfg.run_path / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "loss": 0.5, "steps_per_second": 20.0, "records_consumed": 12800}) + "\n"
    )
    monkeypatch.setattr(guide_stage, "STUDENT_LINE_S", 0.3)
    caplog.set_level(logging.INFO, logger="cluster")
    stop = threading.Event()
    controller = _Controller.remote()
    thread = threading.Thread(target=guide_stage._progress, args=(cfg, controller, False, stop))
    thread.start()
    time.sleep(6)  # production "finishes" after ~2 s: the lines go on
    reports = ray.get(controller.calls.remote())
    stop.set()
    thread.join(timeout=30)
    # the controller (whose report sets the run's gauges) is asked every second after production ended too
    assert reports >= 5, reports
    lines = [r.getMessage() for r in caplog.records if r.name == "cluster.guide_stage"]
    student = [line for line in lines if line.startswith("student ")]
    assert len(student) >= 5, lines  # every period (about 1 s here: the loop polls each second), not only once
    assert all("step 100/300, 12800 records trained, 20.0 steps/s, loss 0.5, ETA 10s" in line for line in student)
    assert "guides 512/512, backlog 0 waiting, 64 held until a checkpoint" in student[-1], student[-1]
    status = json.loads((cfg.run_path / "status.json").read_text())
    assert status["state"] == "running" and status["student"]["step"] == 100
    out = subprocess.run([str(SCRIPT), "status", str(cfg.run_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "run lines: running" in out.stdout and "step 100/300" in out.stdout, out


def test_the_line_before_any_step_and_its_eta():
    s = student_status(12.0, 300, None, {"produced": 0, "undelivered": 0, "pending": 0}, 512)
    assert student_line(s) == (
        "student 12s: starting (no step logged yet of 300); guides 0/512, backlog 0 waiting, 0 held until a checkpoint"
    )
    row = {"step": 300, "loss": 0.1, "steps_per_second": 10.0, "records_consumed": 1}
    assert student_status(1.0, 300, row, {}, 512)["eta_s"] == 0.0


def test_the_line_says_when_no_rank_has_logged_for_longer_than_its_period(tmp_path):
    # a metrics line written 62 s ago (a group restarting, a host being lost): its figures, and how old they are
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 40, "loss": 0.5, "steps_per_second": 4.0, "records_consumed": 2560}) + "\n")
    os.utime(metrics, (time.time() - 62, time.time() - 62))
    s = student_status(90.0, 600, last_metrics(tmp_path), {}, 1536)
    assert "step 40/600" in student_line(s) and "nothing logged for 62s" in student_line(s), student_line(s)
    os.utime(metrics)  # just written: no such remark
    assert "nothing logged" not in student_line(student_status(90.0, 600, last_metrics(tmp_path), {}, 1536))
