"""Several hosts on one machine (``tests/netns_cluster.py``: a head and two worker nodes, each in its own
network namespace with its own address and Ray temp dir): a job submitted with ``ray job submit --working-dir
.`` puts its teacher actors on host B and its student workers on host C (custom resources), reaches the
embedded store on the head's address from both, and loses nothing by its id ledger."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import netns_cluster  # noqa: E402 - the helper beside the tests

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


def test_placement_on_three_hosts_through_ray_job_submit(hosts, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    out = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", hosts["dashboard"], "--working-dir", str(REPO), "--",
         "bezier-distill", "run", "configs/smoke.yaml", "--no-progress", "--set", f"run_dir={tmp_path}",
         "--set", "teachers=[{name: teacher, checkpoints: [self], replicas: 2, resources: {host_b: 1}}]",
         "--set", "student.resources_per_worker={host_c: 1}"],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    head, b, c = hosts["nodes"]["a"], hosts["nodes"]["b"], hosts["nodes"]["c"]
    assert f"store redis://:***@{head}:" in out.stdout  # the embedded store listens where B and C reach it
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    placement = report["production"]["placement"]
    teachers = {n: p["nodes"] for n, p in placement.items() if n.startswith("smoke-teacher-")}
    ranks = {n: p["nodes"] for n, p in placement.items() if n.startswith("student-rank-")}
    assert teachers == {"smoke-teacher-1": [b], "smoke-teacher-2": [b]}, placement
    assert ranks == {"student-rank-0": [c], "student-rank-1": [c]}, placement
    assert report["ledger"]["lost"] == 0 and report["ledger"]["trained"] == 512, report["ledger"]
