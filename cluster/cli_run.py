"""The job's verbs: ``run``, ``doctor``, ``chaos``, ``status`` and ``study`` (their parser: ``cluster.cli``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import ray
import torch

from cluster.chaos import chaos_failures, run_chaos
from cluster.config import load_config
from cluster.ray_start import start_ray
from cluster.job import run_from_args
from cluster.preflight import (
    config_checks,
    cpus_check,
    data_shape_of,
    environment_checks,
    format_checks,
    plan_check,
    student_step_check,
    teachers_check,
)
from cluster.progress import read_status, student_line
from cluster.study import run_study
from teachers.device_plan import resolve_device

__all__ = ["cmd_run", "cmd_doctor", "cmd_chaos", "cmd_status", "cmd_study"]


def cmd_run(args: argparse.Namespace) -> int:
    return run_from_args(args)


def cmd_doctor(args: argparse.Namespace) -> int:

    checks = environment_checks()
    print(format_checks(checks), flush=True)
    if args.config:
        cfg = load_config(args.config, args.overrides)
        gpus = torch.cuda.device_count()  # this machine's GPUs, or the cluster's when the run would join one
        if os.environ.get("RAY_ADDRESS") and next(c for c in checks if c.name == "ray").ok:
            start_ray("cluster")
            gpus = ray.cluster_resources().get("GPU", 0)
        plan = resolve_device(cfg, gpus)
        data_shape = data_shape_of(cfg)
        more = [plan_check(plan), *config_checks(cfg), teachers_check(cfg, data_shape)]
        if ray.is_initialized():  # the cluster in RAY_ADDRESS (a local Ray is started with enough CPUs)
            more.append(cpus_check(cfg, plan, ray.cluster_resources().get("CPU", 0)))
        more.append(student_step_check(cfg, data_shape, plan))
        print(format_checks(more))
        checks += more
    failed = [c for c in checks if c.ok is False]
    print(f"{len(failed)} problem(s) found" if failed else "no problems found")
    return 2 if failed else 0


def cmd_chaos(args: argparse.Namespace) -> int:
    report = run_chaos(
        load_config(args.config, args.overrides),
        malformed=args.malformed,
        undisturbed=args.undisturbed,
    )
    failed = chaos_failures(report)
    for why in failed:
        print(f"chaos failed: {why}", file=sys.stderr)
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.run) if Path(args.run).is_dir() else Path(args.run_dir) / args.run
    status, report = read_status(folder), folder / "report.json"
    if status is None and not report.is_file():
        print(
            f"error: no run in {folder} (neither status.json nor report.json): name a run folder, or its name "
            f"with --run-dir",
            file=sys.stderr,
        )
        return 2
    finished = json.loads(report.read_text()) if report.is_file() else None
    if finished:
        state = finished["status"]
    else:
        assert status is not None  # checked above: without a report.json there is a status.json
        state = status["state"]
    print(f"run {folder.name}: {state}" + (f" ({finished['error']})" if finished and finished.get("error") else ""))
    if status is not None:
        print(student_line(status["student"]))
        for a in status["actors"] if finished is None else []:  # a finished run lists where each ran, below
            print(f"  {a['name']:<40} {a['class']:<16} node {a['node_ip']}")
    placement = ((finished or {}).get("production") or {}).get("placement") or {}
    for name, seen in sorted(placement.items()):
        print(f"  {name:<40} {seen['class']:<16} ran on {', '.join(map(str, seen['nodes']))}")
    if finished and finished.get("ledger"):
        led = finished["ledger"]
        print(
            f"id ledger: {led['planned']} planned, {led['trained']} trained, {led['dead_lettered']} dead-lettered, "
            f"{led['lost']} lost, {led['trained_twice']} trained twice, {led['left_pending']} left pending"
        )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    run_study(
        args.config,
        quick=args.quick,
        out_dir=args.out,
        show_bar=not args.no_progress,
        report_only=args.report_only,
    )
    return 0
