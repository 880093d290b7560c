"""``bezier-distill chaos CONFIG``: the main job under injected faults, against undisturbed runs of it.

While the run produces guides and trains its student, a thread kills a teacher actor at 20%, 50% and 80% of
production (Ray restarts it), one student worker once before its first checkpoint (Ray Train restarts the
group), and the embedded Redis server once (its supervisor restarts it on its append-only file), and writes
malformed entries of many kinds straight into the run's stream; the last student rank also kills itself right
after a checkpoint and right after its final report (``student.fault_hooks``), so resumes from a checkpoint
and from the final one are part of every chaos run. Then ``RUN/chaos_report.json`` says, in records, what was
produced, acknowledged, dead-lettered and lost, with the run's id ledger (``cluster.ledger``: ``lost`` is
read from it, not from the store's counters); the share of produced records the student trained on and how
many it trained on twice; in entries, the malformed ones injected and dead-lettered; the faults planned and
those that landed, with their times; and the student's quality over the mean of the undisturbed runs (the
same seed, so the same teacher, and the next seeds).
It fails (exit 1) when the ledger fails the run or fewer faults landed than were planned.
"""

from __future__ import annotations

import logging
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import ray
import torch

from cluster.logs import quieted
from cluster.config import RunConfig
from cluster.controller_actor import controller_name
from cluster.job import run
from cluster.ledger import LedgerError
from cluster.nodes import local_cpus
from cluster.ray_start import start_ray
from guide_store.atomic import write_json_atomically
from guide_store.codec import decode_batch, encode_batch, encode_record_batch
from guide_store.open_store import embedded_password, open_run_store, open_store
from guide_store.redis_store import RedisGuideStore
from guide_store.schema import META_VERSION, GuideBatch, to_record_batch
from student.fault_hooks import KILL_ENV, landed
from teachers.evaluation import primary_metric
from teachers.guides import PATHS

log = logging.getLogger(__name__)

__all__ = ["run_chaos", "chaos_failures", "malformed_entries", "redis_process", "train_workers", "PLANNED"]

PRODUCTION_KILLS = (0.2, 0.5, 0.8)
RANK_MOMENTS = (
    "after_checkpoint",
    "during_final_checkpoint",
    "after_final_report",
)  # the rank kills itself there (student.fault_hooks)
# every fault a chaos run plans: three teacher kills, one student kill before the first checkpoint, the store
# killed once, the malformed entries written, and the rank's own kills at RANK_MOMENTS
PLANNED = (
    ["teacher actor killed"] * len(PRODUCTION_KILLS)
    + ["student worker killed", "redis-server killed", "malformed entries written"]
    + [f"student rank killed {m}" for m in RANK_MOMENTS]
)


def _batch(
    cfg: RunConfig, ids: list[int], data_shape: tuple[int, ...], guides: int | None = None, run_name: str | None = None
) -> GuideBatch:
    k = PATHS[cfg.guides.path] if guides is None else guides
    g = torch.Generator().manual_seed(ids[0] if ids else 0)
    t = lambda: torch.randn((len(ids), *data_shape), generator=g)
    return GuideBatch(
        sample_id=torch.tensor(ids),
        x0=t(),
        x1=t(),
        guides=[t() for _ in range(k)],
        taus=[(i + 1) / (k + 1) for i in range(k)],
        teachers=["chaos"] * k,
        teacher_versions=["0"] * k,
        guide_rule=cfg.guides.rule,
        coupling=cfg.guides.coupling,
        run=run_name or cfg.name,
        run_seed=cfg.seed,
        producer="chaos",
    )


def _column(rb: pa.RecordBatch, name: str, values) -> pa.RecordBatch:
    return rb.set_column(rb.schema.get_field_index(name), name, pa.array(values))


def malformed_entries(cfg: RunConfig, data_shape: tuple[int, ...], delivered_ids: list[int]) -> dict[str, dict]:
    """Stream entries (their raw fields) of every malformed kind the store must dead-letter, by kind.
    ``delivered_ids``: sample ids the run already handed to a rank (a repeat of them is poison)."""
    fresh = [10**9 + i for i in range(4)]  # ids no producer makes
    good = to_record_batch(_batch(cfg, fresh, data_shape))
    meta = good.schema.metadata
    ipc = lambda rb: encode_record_batch(rb.replace_schema_metadata(meta)).to_pybytes()
    full = encode_batch(_batch(cfg, fresh, data_shape)).to_pybytes()
    nan, inf = _batch(cfg, fresh, data_shape), _batch(cfg, fresh, data_shape)
    nan.x1.view(-1)[0] = math.nan
    inf.x0.view(-1)[0] = math.inf
    wrong_shape = tuple(d + 1 for d in data_shape)
    f64 = pa.FixedShapeTensorArray.from_numpy_ndarray(_batch(cfg, fresh, data_shape).x0.double().numpy())
    version = dict(meta)
    version[META_VERSION] = b"99"
    entry = lambda payload, n=4, **extra: {"n": n, "bytes": len(payload), "v": 1, "payload": payload, **extra}
    kinds = {
        "truncated payload": entry(full[: len(full) // 3]),
        "garbage bytes": entry(os.urandom(200)),
        "empty payload": entry(b""),
        "no payload field": {"n": 4, "bytes": 10, "v": 1},
        "no n/bytes fields": {"v": 1, "payload": full},
        "n not a number": entry(full, n="four"),
        "binary n and bytes": {"n": b"\xff\xfe", "bytes": b"\x00", "v": 1, "payload": full},
        "wrong n": entry(full, n=40_000),
        "unknown schema version": entry(encode_record_batch(good.replace_schema_metadata(version)).to_pybytes()),
        "entry version field": {**entry(full), "v": 7},
        "wrong record shape": entry(encode_batch(_batch(cfg, fresh, wrong_shape)).to_pybytes()),
        "float64 tensors": entry(
            ipc(good.set_column(good.schema.get_field_index("x0"), pa.field("x0", f64.type), f64))
        ),
        "NaN": entry(encode_batch(nan).to_pybytes()),
        "Inf": entry(encode_batch(inf).to_pybytes()),
        "string tau": entry(ipc(_column(good, "tau1", ["a"] * 4))) if "tau1" in good.schema.names else None,
        "string run_seed": entry(ipc(_column(good, "run_seed", ["seven"] * 4))),
        "string sample_id": entry(ipc(_column(good, "sample_id", ["a", "b", "c", "d"]))),
        "another run": entry(encode_batch(_batch(cfg, fresh, data_shape, run_name=f"{cfg.name}-other")).to_pybytes()),
        "another guide count": entry(
            encode_batch(_batch(cfg, fresh, data_shape, guides=PATHS[cfg.guides.path] + 1)).to_pybytes()
        ),
        "repeated ids": entry(encode_batch(_batch(cfg, delivered_ids[:4], data_shape)).to_pybytes())
        if delivered_ids
        else None,
    }
    return {kind: {**fields, "producer": f"chaos-{kind}"} for kind, fields in kinds.items() if fields is not None}


def redis_process(run_path: Path) -> psutil.Process | None:
    """The run's embedded ``redis-server``: it works in the run's ``redis`` folder (redis-server rewrites its
    command line to ``redis-server HOST:PORT``, so the folder is found as its working directory)."""
    folder = str((run_path / "redis").resolve())
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "redis-server" and proc.cwd() == folder:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _port(proc: psutil.Process) -> int:
    return int(proc.cmdline()[0].split()[-1].rsplit(":", 1)[1])


def train_workers() -> list[int]:
    """This process's Ray Train workers: processes of the local Ray it started (its descendants), so nothing
    else on the machine is touched."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("ray::RayTrainWorker" in part for part in proc.cmdline()):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(found)


class _Chaos(threading.Thread):
    """Injects the faults while the run goes on; ``faults`` lists what was done and when."""

    def __init__(self, cfg: RunConfig, malformed: int):
        super().__init__(name="chaos", daemon=True)
        self.cfg, self.malformed = cfg, malformed
        self.stop, self.injected = threading.Event(), 0
        self.faults: list[dict[str, Any]] = []
        self.error: str | None = None
        self.start_time = time.monotonic()

    def _fault(self, kind: str, **detail) -> None:
        self.faults.append({"fault": kind, "at_s": round(time.monotonic() - self.start_time, 1), **detail})
        log.info(f"chaos: {kind} {detail}")

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # reported in the chaos report; the run itself goes on
            self.error = f"{type(err).__name__}: {err}"

    def _run(self) -> None:
        cfg = self.cfg
        controller = None
        while controller is None and not self.stop.wait(0.5):
            try:
                controller = ray.get_actor(controller_name(cfg.name), namespace=cfg.namespace)
            except ValueError:
                pass
        if controller is None:  # stopped before the run's controller was up: nothing to inject into
            return
        proc = redis_process(cfg.run_path)
        url = f"redis://:{embedded_password(cfg.run_path / 'redis')}@127.0.0.1:{_port(proc)}/0"
        store = open_store(url, cfg.name)
        storage = Path(cfg.student.storage_path or cfg.run_path / "train")
        kills, student_killed, redis_killed = list(PRODUCTION_KILLS), False, False
        killed: dict[str, int] = {}  # teacher -> kills so far
        while not self.stop.wait(0.2):
            stats = store.stats()
            done = stats["produced"] / cfg.guides.num_samples
            if kills and done >= kills[0] and done < 1.0:
                # The kill waits for a running teacher: at 80% both may still be restarting from an earlier
                # fault (CI saw the third kill skipped that way).
                # ... and for one that came back from this thread's last kill of it (its restart registered):
                # the controller calls an actor "running" until it notices the restart
                workers: dict[str, dict] = ray.get(controller.list_teachers.remote())  # type: ignore[assignment]  # ray.get types an untyped actor call as a list
                running = sorted(
                    n for n, w in workers.items() if w["state"] == "running" and w["restarts"] >= killed.get(n, 0)
                )
                if running:
                    kills.pop(0)
                    killed[running[0]] = killed.get(running[0], 0) + 1
                    ray.kill(ray.get_actor(f"{cfg.name}-{running[0]}", namespace=cfg.namespace), no_restart=False)
                    self._fault("teacher actor killed", actor=running[0], production=round(done, 2))
            elif kills and done >= 1.0:
                self._fault("teacher actor kills not made", planned=kills, reason="production finished first")
                kills.clear()
            checkpoints = list(storage.glob("*/checkpoint_*"))
            if not student_killed and stats["pending"] and not checkpoints and train_workers():
                pid = train_workers()[-1]
                os.kill(pid, signal.SIGKILL)
                student_killed = True
                self._fault("student worker killed", pid=pid, before_first_checkpoint=True)
            if not redis_killed and done >= 0.35:
                proc = redis_process(cfg.run_path)
                if proc is not None:
                    proc.send_signal(signal.SIGKILL)
                    redis_killed = True
                    self._fault("redis-server killed", pid=proc.pid, production=round(done, 2))
            if not self.injected and done >= 0.6:
                fields = store.client.hscan(store.ids, count=16)[1]
                delivered = [int(i) for i in fields][:4]
                kinds = malformed_entries(cfg, self._data_shape(store), delivered)
                for i in range(self.malformed):
                    store.client.xadd(store.stream, list(kinds.values())[i % len(kinds)])
                self.injected = self.malformed
                self._fault("malformed entries written", entries=self.malformed, kinds=len(kinds))
            if not kills and student_killed and redis_killed and self.injected:
                return

    def _data_shape(self, store: RedisGuideStore) -> tuple[int, ...]:
        for _, fields in store.entries(count=1):
            return tuple(decode_batch(fields["payload"]).x0.shape[1:])
        raise RuntimeError("no guide entry to read the data shape from")


def _local_ray(cfg: RunConfig) -> None:
    """A local Ray of this command's own (RAY_ADDRESS is not used): the processes chaos kills are its own
    descendants, and the runs it compares share one kind of cluster."""
    start_ray("private", cfg.namespace, local_cpus(cfg))


def _quality(report: dict) -> tuple[str, float]:
    first = report["quality"]["student"][0]
    metric = primary_metric(report["quality"]["metric_kind"])
    return metric, float(first[metric])


def run_chaos(cfg: RunConfig, malformed: int = 1000, undisturbed: int = 2) -> dict:
    """``undisturbed`` runs (the run's own seed, so the same teacher and guides, then seeds + 1, + 2, ...), then
    the run under faults; writes and returns the chaos report (its quality ratio is over the undisturbed
    runs' mean)."""
    calm = []
    for k in range(undisturbed):
        c = cfg.model_copy(update={"name": f"{cfg.name}-calm-{k}", "seed": cfg.seed + k})
        log.info(f"chaos: undisturbed run {c.name} (seed {c.seed})")
        _local_ray(c)
        try:
            with quieted():
                calm.append(run(c, show_bar=False, overwrite=True))
        finally:
            ray.shutdown()
    # the rank's own kills need restarts of their own beside the one before the first checkpoint
    student = cfg.student.model_copy(update={"max_failures": max(cfg.student.max_failures, 2 + len(RANK_MOMENTS))})
    chaos_cfg = cfg.model_copy(update={"name": f"{cfg.name}-chaos", "student": student})
    os.environ[KILL_ENV] = ",".join(RANK_MOMENTS)  # inherited by the local Ray's workers
    _local_ray(chaos_cfg)
    injector = _Chaos(chaos_cfg, malformed)
    injector.start()
    ledger_error = None
    try:
        report = run(chaos_cfg, show_bar=False, overwrite=True)
    except LedgerError as err:  # the report is written; the chaos report says what the ledger found
        ledger_error = str(err)
        report = json.loads((chaos_cfg.run_path / "report.json").read_text())
    finally:
        os.environ.pop(KILL_ENV, None)
        injector.stop.set()
        injector.join(timeout=30)
        ray.shutdown()
    with open_run_store(chaos_cfg.name, chaos_cfg.redis_path, must_exist=True) as store:
        stats = store.stats()
        letters = store.dead_letters(count=2 * malformed + 1000)
    consumption = report["student_training"]["consumption"]
    faults = injector.faults + [{"fault": f"student rank killed {m}"} for m in landed(chaos_cfg.run_path)]
    missing = list(PLANNED)
    for fault in faults:
        if fault["fault"] in missing:
            missing.remove(fault["fault"])
    ledger = report["ledger"]
    quality = None
    if "quality" in report:
        metric, value = _quality(report)
        calm_values = [_quality(r)[1] for r in calm]
        mean = sum(calm_values) / len(calm_values) if calm_values else None
        quality = {
            "metric": metric,
            "steps": report["quality"]["student"][0]["steps"],
            "chaos": value,
            "undisturbed": calm_values,
            "ratio": round(value / mean, 4) if mean else None,
        }
    out = {
        "run": chaos_cfg.name,
        "produced": stats["produced"],
        "acknowledged": stats["acknowledged"],
        "dead_lettered": stats["dead_lettered"],
        "pending": stats["pending"],
        "undelivered": stats["undelivered"],
        "lost": ledger["lost"],
        "ledger": ledger,
        "ledger_error": ledger_error,
        "trained_ids_fraction": consumption["trained_ids_fraction"],
        "duplicates": consumption["consumed_twice"],
        "malformed_injected": injector.injected,
        "malformed_dead_lettered": sum(str(d.get("producer", "")).startswith("chaos-") for d in letters),
        "faults_planned": list(PLANNED),
        "faults_not_landed": missing,
        "faults": faults,
        "injector_error": injector.error,
        "run_faults": report["faults"],
        "quality": quality,
    }
    write_json_atomically(chaos_cfg.run_path / "chaos_report.json", out)
    log.info(json.dumps({k: v for k, v in out.items() if k != "faults"}, indent=2))
    log.info(f"chaos report: {chaos_cfg.run_path / 'chaos_report.json'}")
    return out


def chaos_failures(report: dict) -> list[str]:
    """Why a chaos run failed (empty: it passed)."""
    out = [report["ledger_error"]] if report["ledger_error"] else []
    if report["faults_not_landed"]:
        out.append(f"faults planned but not landed: {report['faults_not_landed']}")
    if report["injector_error"]:
        out.append(f"the fault injector failed: {report['injector_error']}")
    return out
