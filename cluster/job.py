"""The main job: ``bezier-distill run CONFIG`` = ``python -m cluster.job CONFIG [--set KEY=VALUE ...]``.

This is what ``ray job submit --working-dir . -- python -m cluster.job configs/digits.yaml``
runs. With ``RAY_ADDRESS`` set (as it is under ``ray job submit``) it joins
that cluster; without, it starts a local Ray, so the same command works on a
laptop. End to end it:

1. trains the configured teachers whose checkpoints are missing (Ray tasks, in
   parallel; cached in the run folder);
2. starts the guide store (the run's embedded Redis when no ``store.url``), the
   controller and the teacher actors;
3. trains the student pool (Ray Train + DeepSpeed) on the guides as they come;
4. evaluates the teachers and the student (``teachers.evaluation``) and writes
   ``runs/NAME/``: ``config.yaml``, ``metrics.jsonl``, ``report.json``,
   ``production.json``, ``samples.png``, ``student_loss.png`` and ``student/``.

``--stop-after guides`` ends after step 2 (guide production only).

The stages live one per file: ``cluster.teacher_stage`` (1), ``cluster.guide_stage`` with
``cluster.controller_actor`` and ``cluster.student_pool`` (2, 3), ``student.run_report`` (4); what the run
asks of the cluster's nodes is in ``cluster.nodes``. This file runs them in order and writes the report.
"""

from __future__ import annotations

import logging
import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray

from guide_store.errors import ClusterError
from cluster.config import (
    ConfigError,
    RunConfig,
    dump_config,
    load_config,
    public_config,
    redact_url,
    resolve_run_paths,
)
from cluster.guide_stage import produce_and_train
from cluster.ledger import LedgerError, failures
from cluster.exit_codes import guarded
from cluster.logs import add_log_arguments, configure_logging, level_of
from cluster.nodes import (
    check_shared_run_dir,
    cpu_shortage,
    local_cpus,
    resource_shortage,
    store_host,
    store_unreachable,
)
from cluster.preflight import PreflightError, dashboard_address_error, input_checks, preflight
from cluster.provenance import provenance
from cluster.ray_start import start_ray
from cluster.teacher_stage import own_teacher_paths, resolve_teachers
from guide_store.atomic import write_json_atomically, write_text_atomically
from guide_store.open_store import run_redis_url
from student.run_report import evaluate_run, quality_table
from teachers.device_plan import resolve_device
from teachers.models import model_data_shape

log = logging.getLogger(__name__)

__all__ = [
    "main",
    "run",
    "run_production",
    "stages_used",
    "faults_seen",
    "add_run_arguments",
    "run_from_args",
    "RunExistsError",
    "STAGES",
]

STAGES = ("guides", "student", "eval")


class RunExistsError(ClusterError, ValueError):
    """The run already finished in its folder; it is not overwritten unless asked."""


def _start_afresh(cfg: RunConfig, overwrite: bool) -> bool:
    """Refuse to write over a finished run (its ``report.json`` says so) unless ``overwrite``; whether an
    earlier attempt left outputs to clear (``_clear_outputs``, once the input checks have passed)."""
    report = cfg.run_path / "report.json"
    if not report.is_file():
        return False
    try:
        status = json.loads(report.read_text()).get("status", "finished")
    except (json.JSONDecodeError, AttributeError):
        status = "unreadable"
    if status == "finished" and not overwrite:
        raise RunExistsError(
            f"run {cfg.name!r} already finished in {cfg.run_path} (see its report.json); start it "
            "again with --overwrite (its trained teachers are kept), or name another run with "
            "--set name=NEW"
        )
    return True


def _clear_outputs(cfg: RunConfig) -> None:
    """An earlier attempt's outputs, cleared; the teachers it trained (``teacher``, ``teacher-K``) are kept as a
    cache (reused only for their recipe: ``cluster.preflight.teachers_check``)."""
    for item in cfg.run_path.iterdir():
        if item.name == "teacher" or item.name.startswith("teacher-"):
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def run(cfg: RunConfig, stop_after: str = "eval", show_bar: bool = True, overwrite: bool = False) -> dict:
    """The whole pipeline (see the module docstring); returns the run report (also ``RUN/report.json``).
    A run that finished before in the same folder is refused unless ``overwrite`` (``RunExistsError``)."""
    if stop_after not in STAGES:
        raise ValueError(f"unknown stage {stop_after!r}; known: {list(STAGES)}")
    start = time.perf_counter()
    cfg = resolve_run_paths(cfg)  # a no-op for configs from load_config; API callers may pass relative ones
    clear = cfg.run_path.is_dir() and _start_afresh(cfg, overwrite)
    started_ray = not ray.is_initialized()
    wrong_address = dashboard_address_error(os.environ.get("RAY_ADDRESS")) if started_ray else None
    if wrong_address:
        raise PreflightError(wrong_address)
    # before Ray starts and before an earlier attempt's outputs are cleared: a wrong store, data file or teacher
    # folder is named in seconds, and a refused --overwrite loses nothing
    inputs = input_checks(cfg)
    if clear:
        _clear_outputs(cfg)
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    write_text_atomically(cfg.run_path / "config.yaml", dump_config(cfg))
    log.info(f"run {cfg.name}: writing to {cfg.run_path}")
    if started_ray:
        start_ray("configured", cfg.namespace, local_cpus(cfg))
    # SIGTERM (``ray job stop``, a scheduler) unwinds like Ctrl-C, so actors, workers and the embedded Redis
    # are stopped on the way out and the report says the run was interrupted (after ray.init, which sets its
    # own handler; the one before is put back at the end). The report is written first, in the handler:
    # ``ray job stop`` SIGKILLs the job 3 s later (RAY_JOB_STOP_WAIT_TIME_S), whatever the clean-up has done
    main_thread = threading.current_thread() is threading.main_thread()
    timings: dict = {}

    stopped_by: list[str] = []  # the signal's name, kept: what unwinds (Ray Train's fit) may raise another

    def interrupt(signum, frame) -> None:
        stopped_by.append(f"signal {signal.Signals(signum).name}")
        _failed_report(public_config(cfg), KeyboardInterrupt(stopped_by[0]), timings, start)
        raise KeyboardInterrupt(stopped_by[0])

    previous_sigterm = signal.signal(signal.SIGTERM, interrupt) if main_thread else None
    teacher_seeds = {str(path): seed for path, seed in own_teacher_paths(cfg).values()}
    try:
        resources = ray.cluster_resources()
        plan = resolve_device(cfg, resources.get("GPU", 0))  # a ConfigError before any work
        short = cpu_shortage(cfg, resources.get("CPU", 0), plan.student_min_workers) or resource_shortage(
            cfg, resources, plan.student_min_workers
        )
        if short:
            raise ConfigError(f"{short[0]}: {short[1]}")
        check_shared_run_dir(cfg.run_path)
        preflight(cfg, plan, inputs)
        store_url, cfg = cfg.store.url, public_config(cfg)  # the password goes to the store only, never to files
        try:  # from here on work is done: a failure still leaves a report saying where and why
            t = time.perf_counter()
            cfg = resolve_teachers(cfg, plan)
            timings["teachers_s"] = round(time.perf_counter() - t, 2)
            data_shape = model_data_shape(cfg.teacher_pool[0].checkpoints[0])
            t = time.perf_counter()
            with run_redis_url(
                cfg.name,
                cfg.redis_path,
                store_url,
                fsync=cfg.store.fsync,
                max_memory_bytes=cfg.store.max_memory_bytes,
                host=store_host(),
            ) as url:
                _check_store_reach(url)
                production, training = produce_and_train(cfg, url, stop_after, show_bar, data_shape, plan)
            timings["guides_and_student_s"] = round(time.perf_counter() - t, 2)
        except BaseException as err:
            failed = _failed_report(cfg, KeyboardInterrupt(stopped_by[0]) if stopped_by else err, timings, start)
            log.info(
                f"run {cfg.name} {failed['status']} after {timings['total_s']:.0f}s; what it saw is in "
                f"{cfg.run_path / 'report.json'}"
            )
            raise
    finally:
        if started_ray:
            ray.shutdown()
        if main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    report: dict[str, Any] = {
        "run": cfg.name,
        "status": "finished",
        "stop_after": stop_after,
        "production": production,
        "student_training": training,
    }
    report["faults"] = faults_seen(cfg, report)
    if production.get("ledger") is not None:
        _check_ledger(cfg, report, production.pop("ledger"), timings, start)
    if stop_after == "eval":
        t = time.perf_counter()
        log.info("evaluating teachers and student ...")
        report["quality"] = evaluate_run(
            cfg,
            [p.checkpoints[0] for p in cfg.teacher_pool] + [c for p in cfg.teacher_pool for c in p.checkpoints[1:]],
            plan.evaluation,
        )
        timings["eval_s"] = round(time.perf_counter() - t, 2)
        log.info(quality_table(report["quality"]))
    timings["total_s"] = round(time.perf_counter() - start, 2)
    report["timings"] = timings
    report["device_plan"] = plan.as_dict()
    report["stages"] = stages_used(cfg, report)
    report["provenance"] = provenance(cfg, teacher_seeds)
    report["config"] = cfg.model_dump(mode="json")
    if stop_after != "guides":
        write_json_atomically(cfg.run_path / "report.json", report)
        log.info(
            f"run {cfg.name} finished in {timings['total_s']:.0f}s; results in {cfg.run_path} "
            f"(report: {cfg.run_path / 'report.json'})"
        )
    return report


def _check_store_reach(url: str) -> None:
    """Every node with CPUs reaches the store (a task on each): refused with the nodes and the fix otherwise."""
    blind = store_unreachable(url)
    if blind:
        raise PreflightError(
            f"the guide store {redact_url(url)} cannot be reached from node(s) {', '.join(blind)}: "
            "their teacher actors and student workers could not read or write guides. Fix: set "
            "store.url to a Redis every node reaches (its address, not 127.0.0.1; open its port), "
            "or, for the embedded store, make this node's address reachable from them"
        )


def _check_ledger(cfg: RunConfig, report: dict, ledger: dict, timings: dict, start: float) -> None:
    """Keep the id ledger in the report; a run that lost records (or left them pending, or trained more twice
    than one batch per fault) is failed here: its report says why, naming the blocks (``LedgerError``)."""
    report["ledger"] = ledger
    faults = report["faults"]
    landed = faults["teacher_restarts"] + len(faults["teachers_lost"]) + faults["student_resumes"]
    why = failures(ledger, landed, cfg.student.batch_size)
    if not why:
        return
    timings["total_s"] = round(time.perf_counter() - start, 2)
    report.update(
        status="failed", error="id ledger: " + "; ".join(why), timings=timings, config=cfg.model_dump(mode="json")
    )
    write_json_atomically(cfg.run_path / "report.json", report)
    raise LedgerError(f"run {cfg.name} failed its id ledger: {'; '.join(why)} (see {cfg.run_path / 'report.json'})")


def faults_seen(cfg: RunConfig, report: dict) -> dict:
    """What went wrong along the way and was recovered from: teacher actors Ray restarted, or lost for good
    (from ``RUN/events.jsonl``), student worker groups resumed from a checkpoint, guide records
    dead-lettered."""
    events = cfg.run_path / "events.jsonl"
    rows = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
    training = report.get("student_training") or {}
    store = (report.get("production") or {}).get("store", {})
    return {
        "teacher_restarts": sum(r["event"] == "teacher_restarted" for r in rows),
        "teachers_lost": [r["worker"] for r in rows if r["event"] == "teacher_dead"],
        "student_resumes": training.get("resumes", 0),
        "dead_lettered": store.get("dead_lettered", 0),
    }


def stages_used(cfg: RunConfig, report: dict) -> dict:
    """The device and precision each stage actually used: teacher training (from each teacher's
    ``train_report.json``; ``None`` for a teacher trained elsewhere), guide production (per teacher actor),
    the student (its ranks' parameter dtype too) and evaluation. Takes evaluation's ``used`` out of the
    quality table."""
    teachers = {}
    for path in dict.fromkeys(c for p in cfg.teacher_pool for c in p.checkpoints):
        train_report = Path(path) / "train_report.json"
        used = json.loads(train_report.read_text()) if train_report.is_file() else {}
        teachers[path] = {k: used[k] for k in ("device", "precision") if k in used} or None
    workers = (report.get("production") or {}).get("workers", {})
    training = report.get("student_training") or {}
    return {
        "teacher_training": teachers,
        "guides": {name: {k: w.get(k) for k in ("device", "precision")} for name, w in workers.items()},
        "student": {k: training.get(k) for k in ("device", "precision", "parameter_dtype", "workers")},
        "evaluation": report.get("quality", {}).pop("used", None),
    }


def run_production(cfg: RunConfig, show_bar: bool = True) -> dict:
    """Guide production only (``--stop-after guides``); returns the production report."""
    return run(cfg, "guides", show_bar)["production"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.job", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_log_arguments(parser)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(level_of(args.quiet, args.verbose))
    return guarded(run_from_args, args)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--stop-after",
        choices=STAGES,
        default="eval",
        help="guides: production only; student: train, skip evaluation; eval: everything",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a run that already finished again (its outputs cleared, its teachers kept)",
    )


def _failed_report(cfg: RunConfig, err: BaseException, timings: dict, start: float) -> dict:
    """Write and return the report of a run that failed (or was interrupted: ``KeyboardInterrupt``) on ``err``."""
    timings["total_s"] = round(time.perf_counter() - start, 2)
    failed = {
        "run": cfg.name,
        "status": "interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
        "error": f"{type(err).__name__}: {err}",
        "timings": timings,
        "faults": faults_seen(cfg, {}),
        "config": cfg.model_dump(mode="json"),
    }
    write_json_atomically(cfg.run_path / "report.json", failed)
    return failed


def run_from_args(args: argparse.Namespace) -> int:
    """``bezier-distill run`` and ``python -m cluster.job``: 0 when the run finished; its errors go up to
    ``cluster.exit_codes.guarded``, which says them and gives their exit code."""
    cfg = load_config(args.config, args.overrides)
    run(cfg, args.stop_after, show_bar=not args.no_progress, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
