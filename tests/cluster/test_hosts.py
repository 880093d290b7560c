"""Several hosts on one machine (``tests/netns_cluster.py``: a head and two worker nodes, each in its own
network namespace with its own address and Ray temp dir), one live job submitted with ``ray job submit
--working-dir .``: its teacher actors on host B, an elastic student pool on B and C (custom resources), the
embedded store reached on the head's address from both; a teacher added mid-run lands where asked; host C is
killed and comes back: the pool shrinks and grows back, and the id ledger loses nothing."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import netns_cluster  # noqa: E402 - the helper beside the tests
from student.fault_hooks import HOLD, KILL_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # a cluster of its own, and a job racing nothing else


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the several-hosts test needs root and iproute2's `ip` (CI runs as root)")
        pytest.skip("needs root and iproute2's `ip`")
    env_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True, timeout=60)
    try:
        yield netns_cluster.up(workers=2, cpus=4)
    finally:
        netns_cluster.down()
        if env_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)


def _headers(ledger: Path) -> list[dict]:
    rows = []
    for path in ledger.glob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("header"):
                rows.append(row)
    return sorted(rows, key=lambda r: r["time"])


def _cli(env: dict, hosts: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "bezier-distill"), *args],
        env={**env, "RAY_ADDRESS": hosts["address"]},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _held(faults: Path) -> bool:
    """A rank holds a delivery and its wait for the checkpoint's registration is over (the marker has its text)."""
    return any(p.stat().st_size > 0 for p in faults.glob("holding-*"))


def _wait(what: str, ok, job: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if job.poll() is not None:
            raise AssertionError(f"the job ended while waiting for {what}:\n{job.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout_s:.0f}s")
        time.sleep(1)


def test_one_job_on_three_hosts_placed_grown_and_surviving_a_lost_host(hosts, tmp_path):
    """Teachers on B, an elastic student pool ([1, 2] workers, one per host offering a student_slot: B and C),
    a teacher added on the head mid-run; host C killed after the pool's first checkpoint: the pool goes on with
    one rank (resharded), grows back to two when C returns, and the ledger loses nothing."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    ray = [str(BIN / "ray"), "job"]
    address = ["--address", hosts["dashboard"]]
    sid = f"hosts-{int(time.time())}"
    for attempt in range(10):  # a head just up may have no job agent yet ("No available agent ...")
        sub = subprocess.run(
            [
                *ray,
                "submit",
                *address,
                "--no-wait",
                "--submission-id",
                sid,
                "--working-dir",
                str(REPO),
                # test-only: the rank on host C pauses holding a delivery no checkpoint has, for C to be lost then
                "--runtime-env-json",
                json.dumps({"env_vars": {KILL_ENV: f"{HOLD}:{hosts['nodes']['c']}"}}),
                "--",
                "bezier-distill",
                "run",
                "configs/smoke.yaml",
                "--no-progress",
                "--set",
                f"run_dir={tmp_path}",
                "--set",
                "teachers=[{name: teacher, checkpoints: [self], replicas: 2, resources: {host_b: 1}}]",
                "--set",
                # 32 blocks, and a checkpoint every 5 steps: by the first checkpoint the two ranks took at most 10
                # blocks (one a step each) and the bound lets 2 more wait, so guides still come after it, for the
                # rank on C to hold one and for the teacher that was on C to come back while they do
                "guides.num_samples=2048",
                "--set",
                "store.max_backlog_records=128",  # guides come as it trains
                "--set",
                "student.steps=600",
                "--set",
                "student.checkpoint_every=5",
                "--set",
                "student.workers=[1, 2]",
                "--set",
                "student.resize_check_s=5",
                "--set",
                "student.resources_per_worker={student_slot: 1}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        if sub.returncode == 0 or "No available agent" not in sub.stdout + sub.stderr:
            break
        time.sleep(3)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    job = subprocess.Popen(
        [*ray, "logs", *address, "--follow", sid],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    head, b, c = hosts["nodes"]["a"], hosts["nodes"]["b"], hosts["nodes"]["c"]
    run = tmp_path / "smoke"
    ledger = run / "ledger"
    try:
        # teachers added while guides are produced, where their --resources say: "hold" on the head, taking its
        # teacher_spare, so "extra" (one teacher_spare, offered by the head and C) lands on C; "hold" is then
        # removed, and "extra" must come back on the head when C is lost
        _wait("the student pool", lambda: len(_headers(ledger)) >= 2, job, 600)
        for name, resources in (("hold", {"host_a": 1, "teacher_spare": 1}), ("extra", {"teacher_spare": 1})):
            add = _cli(
                env,
                hosts,
                "teachers",
                "add",
                "--run",
                "smoke",
                "--checkpoint",
                str(run / "teacher"),
                "--name",
                name,
                "--resources",
                json.dumps(resources),
            )
            assert add.returncode == 0, add.stdout + add.stderr
        # not drained: the rank on C may already hold its delivery, the pool then takes nothing and a draining
        # actor would wait on the full store for good (its block is handed out again)
        remove = _cli(env, hosts, "teachers", "remove", "--run", "smoke", "hold-3", "--no-drain")
        assert remove.returncode == 0, remove.stdout + remove.stderr
        # the marker is claimed empty at once and gets its text after HOLD_REGISTER_S: only then has Ray Train's
        # controller polled the checkpoint the rank reported (a report waits in the rank's queue for the next
        # poll: a host lost before that poll takes it along, and the checkpoint is never registered)
        _wait("the rank on C holding a delivery", lambda: _held(run / "test-faults"), job, 300)
        netns_cluster.kill_host("c")
        _wait("a one-rank group", lambda: any(h["world"] == 1 for h in _headers(ledger)), job, 240)
        netns_cluster.start_host("c")
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    status = subprocess.run([*ray, "status", *address, sid], env=env, capture_output=True, text=True, timeout=60)
    assert "succeeded" in status.stdout.lower(), out[-6000:] + status.stdout
    assert f"store redis://:***@{head}:" in out  # the embedded store listens where B and C reach it
    report = json.loads((run / "report.json").read_text())
    worlds = [g["world"] for g in report["student_training"]["pool_history"]]
    assert worlds[0] == 2 and 1 in worlds and worlds[-1] == 2 and worlds.index(1) < len(worlds) - 1, worlds
    placement = report["production"]["placement"]
    assert placement["smoke-teacher-1"]["nodes"] == [b] and placement["smoke-teacher-2"]["nodes"] == [b], placement
    assert [p["nodes"] for n, p in placement.items() if "hold" in n] == [[head]], placement
    assert [p["nodes"] for n, p in placement.items() if "extra" in n] == [[c, head]], placement  # back on A
    ranks = {n: set(p["nodes"]) for n, p in placement.items() if n.startswith("student-rank-")}
    assert ranks["student-rank-0"] | ranks["student-rank-1"] == {b, c}, placement
    groups = report["student_training"]["pool_history"]  # one rank per student_slot: B and C, then B alone
    assert all(sorted(g["nodes"].values()) == ([b] if g["world"] == 1 else sorted([b, c])) for g in groups), groups
    # host C was lost while guides still came: the one rank left resumed from the two ranks' checkpoint
    # (resharded) and took over the deliveries rank 1 held that its checkpoint did not
    shrunk = [g for g in groups if g["world"] == 1]
    assert shrunk[0]["resumed_at"] > 0 and shrunk[0]["from_world"] == 2, groups
    assert report["production"]["store"]["reclaimed"] >= 64, report["production"]["store"]  # the held block, again
    lost_rank = int(next(r for r, node in groups[0]["nodes"].items() if node == c))
    if lost_rank >= 1:  # its consumer name is gone from a one-rank pool: rank 0 took its entries over
        assert shrunk[0]["took_over"] > 0, groups
    ledger_report = report["ledger"]
    assert ledger_report["lost"] == 0 and ledger_report["left_pending"] == 0, ledger_report
    assert ledger_report["trained"] == 2048 and ledger_report["trained_twice"] == 0, ledger_report
