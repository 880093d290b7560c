"""The run's middle stage: teacher actors produce guides into the store while the student pool trains on them.

The controller (``cluster.controller_actor``) starts the configured teacher pools and hands out blocks of
sample ids; this module follows production on a background thread (progress bar, dead actors noticed and
their blocks handed out again) while ``cluster.student_pool`` runs the DeepSpeed ranks, then stops the
teachers and writes ``RUN/production.json``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray
import torch
from tqdm.auto import tqdm

from cluster.config import RunConfig, redact_url
from cluster.controller_actor import start_controller
from cluster.ledger import build_ledger
from cluster.progress import STUDENT_LINE_S, last_metrics, live_actors, student_line, student_status, write_status
from cluster.student_pool import run_student_pool
from guide_store.atomic import write_json_atomically
from guide_store.open_store import open_store
from student.id_ledger import LEDGER_DIR, rank_nodes, trained_steps
from teachers.device_plan import DevicePlan
from teachers.ensemble import TeacherSpec
from teachers.guides import distinct_pairs
from teachers.models import model_kind
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = ["produce_and_train"]


class _StudentLines:
    """The job log's ``student`` line and ``RUN/status.json`` every ``STUDENT_LINE_S`` (``cluster.progress``),
    from the student pool's start; the nodes every actor and worker was seen on, for the report."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.start = self.last = time.monotonic()
        self.job_id = ray.get_runtime_context().get_job_id()
        self.seen: dict[str, dict] = {}  # actor or worker name -> {"class", "nodes"}

    def tick(self, report: dict, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < STUDENT_LINE_S:
            return
        self.last = time.monotonic()
        status = student_status(
            time.monotonic() - self.start,
            self.cfg.student.steps,
            last_metrics(self.cfg.run_path),
            report["store"],
            self.cfg.guides.num_samples,
        )
        actors = live_actors(self.cfg.namespace, self.cfg.name, self.job_id)
        for a in actors:
            seen = self.seen.setdefault(a["name"], {"class": a["class"], "nodes": []})
            if a["node_ip"] not in seen["nodes"]:
                seen["nodes"].append(a["node_ip"])
        write_status(self.cfg.run_path, status, actors)
        log.info(student_line(status))  # its own line, above the bar (``cluster.logs``)


def _progress(
    cfg: RunConfig, controller, show_bar: bool, stop: threading.Event | None = None, lines: list | None = None
) -> dict:
    """Follow guide production until it is finished; with ``stop``, follow the student too (a ``student``
    line every ``STUDENT_LINE_S``, the store's gauges kept fresh) until ``stop`` is set. Returns the
    controller's report; ``lines`` (a list) gets the ``_StudentLines`` object."""
    total = cfg.guides.num_samples
    bar = tqdm(total=total, desc=f"{cfg.name}: guides", unit="rec", disable=not show_bar, position=0)
    student = _StudentLines(cfg) if stop is not None else None
    if lines is not None:
        lines.append(student)
    last_check = time.monotonic()
    report: dict[str, Any] = {}
    told: set[str] = set()
    try:
        while True:
            # also sets the run's gauges again: Ray drops a gauge not set within two metrics export intervals
            # (~20 s), so this goes on after production ends, until the students do
            report = ray.get(controller.report.remote())
            bar.n = min(report["store"]["produced"], total)  # a closed (disabled) bar shows nothing
            bar.set_postfix(teachers=report["live_teachers"], backlog=report["store"]["backlog"])
            bar.refresh()
            if student is not None:
                student.tick(report)
            if stop is not None and stop.is_set():
                return report
            if report["finished"]:
                if stop is None:
                    return report
                if not bar.disable:
                    bar.close()  # production is done: the student lines go on below it
                    bar.disable = True
                time.sleep(1.0)
                continue
            failed = {n: w["error"] for n, w in report["workers"].items() if w["state"] == "failed"}
            for name in failed.keys() - told:
                log.warning(f"teacher actor {name} stopped on an error (its block is handed out again): {failed[name]}")
            told |= failed.keys()
            checked = time.monotonic() - last_check > 10
            if checked:  # actors that stopped answering: restarting, or gone for good
                dead = ray.get(controller.check_workers.remote())
                if dead:
                    log.warning(f"teacher actors gone for good: {dead}; their blocks are handed out again")
                last_check = time.monotonic()
            working = ("running", "starting", "restarting")
            stuck = report["workers"] and not any(w["state"] in working for w in report["workers"].values())
            if stuck and (failed or checked):  # an error says so at once; anything else after a check
                errors = "".join(f"\n  {n}: {e}" for n, e in failed.items())
                raise RuntimeError(
                    f"no teacher actor is running and {report['queued']} blocks remain; add one with: "
                    f"bezier-distill teachers add --checkpoint PATH{errors}"
                )
            time.sleep(1.0)
    finally:
        bar.close()


class _Production:
    """Guide production followed on a background thread while the student pool trains."""

    def __init__(self, cfg: RunConfig, controller, show_bar: bool):
        self.stop = threading.Event()
        self.report: dict[str, Any] = {}
        self.error: Exception | None = None
        self.lines: list[_StudentLines | None] = []
        self.thread = threading.Thread(target=self._follow, args=(cfg, controller, show_bar), daemon=True)

    def _follow(self, cfg, controller, show_bar) -> None:
        try:
            self.report = _progress(cfg, controller, show_bar, self.stop, self.lines)
        except Exception as err:  # surfaced by the main thread after the student pool returns
            self.error = err

    def __enter__(self) -> "_Production":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _stop_teachers(controller) -> None:
    """Stop every teacher actor, whatever its state, then the controller. Production is over (or failed), so
    nothing is drained; a failure to stop one actor is reported and the others are still stopped."""
    try:
        names = list(ray.get(controller.list_teachers.remote(), timeout=60))
    except ray.exceptions.RayError as err:
        log.warning(f"warning: the controller did not answer ({err}); its teacher actors end with the job")
        names = []
    for name in names:
        try:
            ray.get(controller.remove_teacher.remote(name, False), timeout=60)
        except ray.exceptions.RayError as err:
            log.warning(f"warning: teacher actor {name} could not be stopped: {err}")
    ray.kill(controller)


def _clear_previous_attempt(cfg: RunConfig, url: str) -> None:
    """A run starts from an empty stream: a student pool never resumes across jobs, and the guides of an
    earlier attempt (same seed, so the same bits) would only be skipped as duplicates by the producers."""
    store = open_store(url, cfg.name)
    try:
        stats = store.stats()
        if stats["produced"] or stats["stream_entries"] or stats["dead_entries"]:
            log.info(
                f"run {cfg.name}: clearing {stats['produced']} guide records of an earlier attempt from the store "
                f"({stats['acknowledged']} acknowledged, {stats['backlog']} not)"
            )
            store.delete_run()
    finally:
        store.close()


def _student_init(cfg: RunConfig) -> TeacherSpec | None:
    """The teacher the student starts from with ``student.init: teacher``: the run's first (its first pool's
    ``first_teacher``; of an ensemble the student copies the first member, and the distribution-matching
    phase runs the whole ensemble). A diffusers first checkpoint gives a student of its own architecture
    (``student.networks.initial_student``)."""
    if cfg.student.init != "teacher":
        return None
    teacher = cfg.teacher_pool[0].first_teacher()
    first = teacher.first
    if model_kind(first) == "diffusers":
        log.info(
            f"student.init is teacher and the first teacher {first} is a diffusers model: the student is of its "
            f"architecture, started from its weights (student.network does not apply)"
        )
    return teacher


def _ledger(cfg: RunConfig, url: str, report: dict) -> dict:
    """The run's id ledger (``cluster.ledger``) from the controller's plan and written blocks, the trainers'
    ids and the store's dead letters and pending entries."""
    store = open_store(url, cfg.name)
    try:
        letters = store.dead_letters(count=10_000_000)
        pending = store.pending_sample_ids()
    finally:
        store.close()
    return build_ledger(report["plan"], report["written"], trained_steps(cfg.run_path / LEDGER_DIR), letters, pending)


def produce_and_train(
    cfg: RunConfig,
    url: str | None,
    stop_after: str,
    show_bar: bool,
    data_shape: tuple[int, ...],
    plan: DevicePlan | None = None,
) -> tuple[dict, dict | None]:
    """Teacher actors fill the store while the student pool consumes it (``stop_after="guides"``: no
    student); returns (production, training) and writes ``RUN/production.json``."""
    init = _student_init(cfg)
    if cfg.student.source == "parquet":
        return {}, run_student_pool(cfg, None, data_shape, init, plan)
    assert url is not None  # a store-fed run has a store (``None`` only with Parquet files)
    start = time.perf_counter()
    _clear_previous_attempt(cfg, url)
    controller = start_controller(cfg, url)
    workers = ray.get(controller.start_pools.remote())
    log.info(f"run {cfg.name}: {len(workers)} teacher actor(s) {workers}, store {redact_url(url)}")
    training, placement = None, {}
    try:
        if stop_after == "guides":
            report = _progress(cfg, controller, show_bar)
        else:
            with _Production(cfg, controller, show_bar) as production:
                training = run_student_pool(cfg, url, data_shape, init, plan)
                production.stop.set()
            if production.error is not None:
                raise production.error
            report = ray.get(controller.report.remote())
            if production.lines and production.lines[0] is not None:
                production.lines[0].tick(report, force=True)  # the last line: the student's final figures
                placement = production.lines[0].seen
    finally:
        _stop_teachers(controller)
    seconds = time.perf_counter() - start
    store = report["store"]
    out = {
        "run": cfg.name,
        "seconds": round(seconds, 2),
        "records": store["produced"],
        "records_per_second": round(store["produced"] / seconds, 1),
        "store": store,
        "workers": report["workers"],
        "guides": cfg.guides.model_dump(mode="json"),
        "placement": placement,
        "distinct_pairs": distinct_pairs(
            cfg.guides.coupling_settings(),
            cfg.seed,
            torch.arange(cfg.guides.num_samples),
            lambda: len(load_run_data(cfg.data, cfg.seed).train),
        ),
    }
    for name, worker in report["workers"].items():  # each teacher actor said where it ran, in order, however briefly
        seen = placement.setdefault(f"{cfg.name}-{name}", {"class": "TeacherWorker", "nodes": []})
        said = worker.get("nodes", [])
        seen["nodes"] = said + [n for n in seen["nodes"] if n not in said]
    if training is not None:
        out["ledger"] = _ledger(cfg, url, report)
        for name, nodes in rank_nodes(cfg.run_path / LEDGER_DIR).items():  # each rank says where it ran
            placement[name] = {"class": "RayTrainWorker", "nodes": nodes}
    write_json_atomically(cfg.run_path / "production.json", out)
    log.info(
        f"produced {store['produced']} guide records in {seconds:.1f}s ({out['distinct_pairs']} distinct noise-data "
        f"pairs); acknowledged {store['acknowledged']}, dead-lettered {store['dead_lettered']}, "
        f"backlog {store['backlog']}"
    )
    if training is not None:  # coverage: the share of the produced records some rank trained on
        consumption = training["consumption"]
        consumption["trained_ids_fraction"] = round(consumption["records"] / max(1, store["produced"]), 4)
        log.info(
            f"the student trained on {consumption['records']} distinct records of {store['produced']} produced "
            f"({consumption['trained_ids_fraction']:.2%}); {consumption['consumed_twice']} twice"
        )
        ledger = out["ledger"]
        log.info(
            f"id ledger: {ledger['planned']} planned, {ledger['trained']} trained, {ledger['dead_lettered']} "
            f"dead-lettered, {ledger['lost']} lost"
            f"{' from blocks ' + str(ledger['lost_blocks']) if ledger['lost'] else ''}"
            f", {ledger['trained_twice']} trained twice, {ledger['left_pending']} left pending"
        )
    return out, training
