"""`ray job submit` of the whole job (teachers, store, student pool, evaluation) to a `ray start --head` cluster
(token authentication on, no default ports); `bezier-distill teachers list/add/remove` against the running job;
then the teacher and student metrics read from the node's metrics endpoint."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import shutil
import tempfile

import pytest

from cluster.chaos import redis_process
from guide_store.embedded import free_ports

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _stop_during_student_training(submit: list[str], run_dir: Path, dash: int, env: dict) -> None:
    """`ray job stop` (Ray's default grace: SIGTERM, SIGKILL 3 s later) while the student pool trains: the report
    says interrupted, and nothing of the run is left running (its actors, its workers, its redis-server)."""
    address = f"http://127.0.0.1:{dash}"
    args = submit[: submit.index("--set")] + [
        "--set",
        f"run_dir={run_dir}",
        "--set",
        "name=stopme",
        "--set",
        "teacher.steps=200",
        "--set",
        "student.steps=100000",
        "--set",
        "guides.num_samples=4096",
        "--set",
        "guides.block_size=128",
    ]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    job_id = re.search(r"raysubmit_\w+", out.stdout).group(0)
    metrics = run_dir / "stopme" / "metrics.jsonl"  # rank 0 writes it as the pool trains
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(1)
    assert metrics.is_file(), "the student pool never logged a step"
    start = time.monotonic()
    stop = subprocess.run(
        [str(BIN / "ray"), "job", "stop", "--address", address, job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    stopped_in = time.monotonic() - start
    assert stop.returncode == 0, stop.stdout + stop.stderr
    report = json.loads((run_dir / "stopme" / "report.json").read_text())
    assert report["status"] == "interrupted" and "SIGTERM" in report["error"], report
    deadline, alive = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        listing = subprocess.run(
            [
                str(BIN / "ray"),
                "list",
                "actors",
                "--address",
                address,
                "--filter",
                "state=ALIVE",
                "--format",
                "json",
                "--limit",
                "1000",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        alive = [
            a
            for a in json.loads(listing.stdout or "[]")
            if (a.get("name") or "").startswith("stopme-")
            or a.get("class_name") == "RayTrainWorker"
            or a.get("name") == "controller-stopme"
        ]
        if not alive and redis_process(run_dir / "stopme") is None:
            break
        time.sleep(1)
    assert alive == [] and redis_process(run_dir / "stopme") is None, (alive, listing.stderr[-500:])
    assert stopped_in < 60, stopped_in


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


@pytest.mark.slow
@pytest.mark.alone  # its CLI calls race the job's production: run by itself (pyproject.toml)
def test_ray_job_submit_and_dashboard_metrics(tmp_path):
    gcs, dash, metrics, *others = free_ports(9)
    assert 6379 not in (gcs, dash, metrics)
    # every port of this head is a free one: Ray's defaults (agents, client server) may be taken by another
    # cluster on the machine, and the job agent then never comes up ("No available agent to submit job")
    pinned = [
        f"--{opt}={port}"
        for opt, port in zip(
            (
                "node-manager-port",
                "object-manager-port",
                "runtime-env-agent-port",
                "dashboard-agent-grpc-port",
                "dashboard-agent-listen-port",
                "ray-client-server-port",
            ),
            others,
        )
    ]
    # no drain on the head's SIGTERM at the end: Ray would wait out 30 s for processes the job already ended
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    short = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's unix sockets need a short path (< 108 bytes)
    head_log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            f"--metrics-export-port={metrics}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={short}",
            *pinned,
        ],
        env=env,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run_dir = tmp_path / "runs"
        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--no-wait",
            "--address",
            f"http://127.0.0.1:{dash}",
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "-m",
            "cluster.job",
            "configs/toy2d.yaml",
            "--no-progress",
            "--set",
            f"run_dir={run_dir}",
            "--set",
            "teacher.steps=200",
            "--set",
            "student.steps=100",
            "--set",
            "student.checkpoint_every=50",
            "--set",
            "eval.n_samples=500",
            "--set",
            "eval.steps=[1]",
            "--set",
            "student.eval_steps=[1]",
            "--set",
            "guides.num_samples=12000",
            "--set",
            "guides.block_size=100",
            "--set",
            "store.max_backlog_records=1000",  # production waits for the students
            "--set",
            "guides.coupling_steps=96",  # production outlasts the CLI calls below
            "--set",
            "teachers=[{name: teacher, checkpoints: [self], replicas: 1}]",
        ]
        deadline = time.monotonic() + 180
        while True:  # the dashboard's job API and its agent come up a little after the head
            out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
            if out.returncode == 0 or time.monotonic() > deadline or head.poll() is not None:
                break  # submitted, out of time, or the head is gone (its log says why)
            time.sleep(2)
        assert out.returncode == 0, (
            out.stdout[-3000:] + out.stderr[-3000:] + (tmp_path / "head.log").read_text()[-3000:]
        )
        job_id = re.search(r"raysubmit_\w+", out.stdout).group(0)

        cli_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
        cli = lambda *a: subprocess.run(
            [str(BIN / "bezier-distill"), "teachers", *a, "--run", "toy2d"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # wait for the job's controller and first actor
            listing = cli("list")
            if listing.returncode == 0 and "teacher-1" in listing.stdout and "running" in listing.stdout:
                break
            time.sleep(2)
        assert "teacher-1" in listing.stdout, listing.stdout + listing.stderr
        # the changes first, while production surely runs (the refusal first: it needs only the controller, and
        # each CLI call takes seconds); what they left is read from the run's files below
        refused = cli("add", "--checkpoint", str(tmp_path / "missing"))
        assert refused.returncode == 2 and "checkpoint directory does not exist" in refused.stderr, refused.stderr
        checkpoint = str(run_dir / "toy2d" / "teacher")
        added = cli("add", "--checkpoint", checkpoint, "--name", "extra")
        assert added.returncode == 0 and "extra-2" in added.stdout, added.stdout + added.stderr
        removed = cli("remove", "teacher-1", "--drain")
        assert removed.returncode == 0 and "removed teacher-1" in removed.stdout, removed.stdout + removed.stderr

        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            status = subprocess.run(
                [str(BIN / "ray"), "job", "status", "--address", f"http://127.0.0.1:{dash}", job_id],
                env=env,
                capture_output=True,
                text=True,
            ).stdout
            if "succeeded" in status.lower() or "failed" in status.lower() or "stopped" in status.lower():
                break
            time.sleep(3)
        assert "succeeded" in status.lower(), (
            status
            + subprocess.run(
                [str(BIN / "ray"), "job", "logs", "--address", f"http://127.0.0.1:{dash}", job_id],
                env=env,
                capture_output=True,
                text=True,
            ).stdout[-3000:]
        )
        report = json.loads((run_dir / "toy2d" / "production.json").read_text())
        assert report["records"] == 12000 and report["store"]["produced"] == 12000  # nothing lost or doubled
        assert report["workers"]["extra-2"]["blocks"] > 0 and report["workers"]["extra-2"]["state"] != "removed"
        assert report["workers"]["teacher-1"]["state"] == "removed" and report["workers"]["teacher-1"]["blocks"] > 0
        assert set(report["workers"]) == {"teacher-1", "extra-2"}  # the refused add started nothing
        events = (run_dir / "toy2d" / "events.jsonl").read_text()
        assert '"teacher_added"' in events and '"teacher_removed"' in events
        text, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            text = _metrics(metrics)
            if re.search(r'ray_bezier_guides_produced_total\{[^}]*teacher="extra-2"[^}]*\} \d', text):
                break
            time.sleep(2)
        counts = [
            float(v) for v in re.findall(r'ray_bezier_guides_produced_total\{[^}]*run="toy2d"[^}]*\} (\S+)', text)
        ]
        assert sum(counts) >= 12000 and len(counts) >= 2, counts  # per teacher actor
        for name in (
            "ray_bezier_guide_batch_seconds_count",
            "ray_bezier_store_backlog_records",
            "ray_bezier_store_pending_records",
            "ray_bezier_store_dead_lettered",
            "ray_bezier_live_teacher_actors",
            "ray_bezier_student_loss",
            "ray_bezier_student_guide_wait_seconds_count",
            "ray_bezier_student_steps_per_second",
        ):
            assert name in text, name
        consumed = [
            float(v)
            for v in re.findall(r'ray_bezier_student_records_consumed_total\{[^}]*run="toy2d"[^}]*\} (\S+)', text)
        ]
        assert sum(consumed) == 12000 and len(consumed) == 2, consumed  # per student rank
        run_report = json.loads((run_dir / "toy2d" / "report.json").read_text())
        assert report["store"]["acknowledged"] == 12000 and report["store"]["backlog"] == 0
        assert run_report["ledger"]["lost"] == 0 and run_report["ledger"]["trained"] == 12000  # by ids
        assert [r["steps"] for r in run_report["quality"]["student"]] == [1]
        _stop_during_student_training(submit, tmp_path / "stopped", dash, env)
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        head_log.close()
        shutil.rmtree(short, ignore_errors=True)
