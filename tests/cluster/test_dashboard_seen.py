"""The dashboard, seen: a `ray job submit` of the smoke run to a token-auth `ray start --head` cluster, watched
as a user would.

- Headless Chromium (Debian's `chromium`, driven by Playwright through `executable_path`) opens the Ray
  dashboard, types the token from `ray get-auth-token` into the prompt Ray's token auth shows, and finds the
  job RUNNING on the Jobs page and the teacher actors (`smoke-teacher-1`, `smoke-teacher-2`) and the student
  workers (`RayTrainWorker`) ALIVE on the Actors page.
- Prometheus (Debian's `prometheus`) scrapes Ray through the service-discovery file Ray writes into its
  session dir, and every PromQL expression of `cluster/grafana/bezier_distill_dashboard.json` (its `$run`
  variable set to the run) returns a finite value, queried after production ended while the students still
  train (the run's store gauges must outlive production: Ray drops a gauge that is not set again within ~20 s).

Screenshots (Jobs, Actors, a Prometheus graph) go to the test's tmp dir, or to `$BEZIER_SCREENSHOTS_DIR`
(docs/screenshots was made so). With `CI=true` a missing tool fails the test; elsewhere it skips, saying what
to install.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from guide_store.embedded import free_ports

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DASHBOARD_JSON = REPO / "cluster" / "grafana" / "bezier_distill_dashboard.json"
RUN = "smoke"
RECORDS = 3072  # production (~30 s) spans several of Ray's 10 s metric exports: rates and latency quantiles have data
STUDENT_WORKERS = 2  # configs/smoke.yaml


def _tool(name: str, found: bool, install: str) -> None:
    if found:
        return
    why = f"{name} is missing: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(why)  # CI installs it (.ci/run): missing there is a failure, never a skip
    pytest.skip(why)


def dashboard_queries(run: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the shipped Grafana dashboard, with its `$run` variable set to
    ``run`` (what Grafana sends for that choice of the variable)."""
    dash = json.loads(DASHBOARD_JSON.read_text())
    variables = {v["name"] for v in dash.get("templating", {}).get("list", []) if v.get("type") == "query"}
    assert variables == {"run"}, f"the dashboard's query variables changed ({variables}): substitute them here"
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            out.append((panel["title"], target["expr"].replace("${run}", run).replace("$run", run)))
    return out


def _prom_query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read().decode())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _finite(result: list[dict]) -> list[float]:
    return [float(s["value"][1]) for s in result if math.isfinite(float(s["value"][1]))]


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.alone  # a live job on 2 cores with time limits: another test beside it makes it lose its race
def test_dashboard_jobs_actors_and_every_grafana_query(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    _tool("chromium", chromium is not None, "apt-get install chromium")
    _tool("prometheus", shutil.which("prometheus") is not None, "apt-get install prometheus")
    _tool("playwright", importlib.util.find_spec("playwright") is not None, "pip install -e '.[dev]'")
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("BEZIER_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    gcs, dash, metrics, prom_port, *others = free_ports(10)
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
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "BEZIER_DISTILL_HOME": str(tmp_path / "home"),
    }
    env.pop("RAY_ADDRESS", None)
    token = subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert token.returncode == 0 and token.stdout.strip(), token.stderr
    token = token.stdout.strip().splitlines()[-1]
    short = tempfile.mkdtemp(prefix="rd", dir="/tmp")  # Ray's unix sockets need a short path
    head = prom = None
    address = f"http://127.0.0.1:{dash}"
    job_id = None
    started = time.monotonic()
    try:
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
            stdout=open(tmp_path / "head.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        # Prometheus on the file Ray writes into its session dir (and links from the temp dir)
        discovery = Path(short) / "session_latest" / "prom_metrics_service_discovery.json"
        deadline = time.monotonic() + 120
        while not discovery.exists() and time.monotonic() < deadline and head.poll() is None:
            time.sleep(1)
        assert discovery.exists(), (tmp_path / "head.log").read_text()[-3000:]
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 2s\nscrape_configs:\n- job_name: ray\n  file_sd_configs:\n"
            f"  - files: ['{discovery}']\n    refresh_interval: 5s\n"
        )
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            ],
            stdout=open(tmp_path / "prometheus.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        submit = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--no-wait",
            "--address",
            address,
            "--working-dir",
            str(REPO),
            "--",
            "bezier-distill",
            "run",
            "configs/smoke.yaml",
            "--no-progress",
            "--set",
            f"run_dir={tmp_path / 'runs'}",
            "--set",
            "teacher.steps=100",
            "--set",
            f"guides.num_samples={RECORDS}",
            # the students train on long after production (the job is stopped once seen)
            "--set",
            "student.steps=20000",
            "--set",
            "student.checkpoint_every=1000",
        ]
        deadline = time.monotonic() + 120
        while True:  # the dashboard's job API comes up a little after the head
            out = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
            if out.returncode == 0 or time.monotonic() > deadline or head.poll() is not None:
                break
            time.sleep(2)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        job_id = re.search(r"raysubmit_\w+", out.stdout).group(0)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(address + "/")
                box = page.get_by_placeholder("Enter your authentication token")
                expect(box).to_be_visible(timeout=60_000)  # Ray's token prompt
                box.fill(token)
                page.get_by_role("button", name="Submit").click()
                expect(page.get_by_role("dialog")).to_be_hidden(timeout=30_000)  # the token was accepted

                page.goto(address + "/#/jobs")
                row = page.locator("tr").filter(has_text=job_id)
                expect(row).to_contain_text("RUNNING", timeout=60_000)
                page.screenshot(path=str(shots / "ray_dashboard_jobs.png"))

                page.goto(address + "/#/actors")
                page.get_by_label("Page Size").fill("50")  # one page holds them all (Ray Train brings 6 more)
                names = [f"{RUN}-teacher-1", f"{RUN}-teacher-2"]
                alive = page.locator("tr").filter(has_text="ALIVE")
                deadline = time.monotonic() + 150  # the teacher trains first, then actors and workers start
                while time.monotonic() < deadline:
                    if (
                        all(alive.filter(has_text=n).count() == 1 for n in names)
                        and alive.filter(has_text="RayTrainWorker").count() == STUDENT_WORKERS
                    ):
                        break
                    page.wait_for_timeout(3000)  # the Actors page refreshes itself
                for name in names:
                    expect(alive.filter(has_text=name)).to_have_count(1, timeout=1000)
                expect(alive.filter(has_text="RayTrainWorker")).to_have_count(STUDENT_WORKERS, timeout=1000)
                expect(alive.filter(has_text=f"controller-{RUN}")).to_have_count(1, timeout=1000)
                page.screenshot(path=str(shots / "ray_dashboard_actors.png"), full_page=True)

                # every dashboard query, after production ended and longer than Ray keeps a gauge not set again
                produced = f'max(ray_bezier_store_produced{{run="{RUN}"}})'
                deadline = time.monotonic() + 150
                while (
                    time.monotonic() < deadline and max(_finite(_prom_query(prom_port, produced)), default=0) < RECORDS
                ):
                    time.sleep(3)
                assert max(_finite(_prom_query(prom_port, produced)), default=0) >= RECORDS, "production did not end"
                time.sleep(30)
                queries = dashboard_queries(RUN)
                deadline = time.monotonic() + 45
                while True:
                    empty = [(title, expr) for title, expr in queries if not _finite(_prom_query(prom_port, expr))]
                    if not empty or time.monotonic() > deadline:
                        break
                    time.sleep(5)
                assert not empty, "dashboard queries without data: " + "; ".join(f"{t}: {e}" for t, e in empty)
                # the students still train: the store's gauges are kept, and show what the students acknowledged
                assert _finite(_prom_query(prom_port, f'max(ray_bezier_student_step{{run="{RUN}"}})'))

                graph = dict(queries)["Guide records produced per second, by teacher actor"]
                page.goto(
                    f"http://127.0.0.1:{prom_port}/classic/graph?"
                    + urllib.parse.urlencode({"g0.expr": graph, "g0.tab": "0", "g0.range_input": "5m"})
                )
                expect(page.locator("svg").first).to_be_visible(timeout=30_000)  # the classic UI's graph
                page.wait_for_timeout(2000)
                page.screenshot(path=str(shots / "prometheus_guides_per_teacher.png"))
            finally:
                browser.close()
    finally:
        if job_id is not None and head.poll() is None:
            try:
                subprocess.run(
                    [str(BIN / "ray"), "job", "stop", "--address", address, job_id],
                    env=env,
                    capture_output=True,
                    timeout=120,
                )
            except subprocess.TimeoutExpired:
                pass  # the head's stop below ends it
        _stop(prom)
        _stop(head)
        shutil.rmtree(short, ignore_errors=True)
        print(f"dashboard test: {time.monotonic() - started:.0f}s")
