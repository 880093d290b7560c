"""The benchmarks: ``bench pipeline | store | teachers | guides`` (their parser: ``cluster.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from cluster.config import load_config
from cluster.logs import quieted
from cluster.pipeline_bench import format_bench_table, run_pipeline_bench, size_config
from cluster.production_bench import run_production_bench
from guide_store.atomic import write_json_atomically
from guide_store.bench import run_bench
from student.evaluate import evaluate_teacher
from teachers.checkpoint import checkpoint_complete
from teachers.evaluation import QualitySettings, primary_metric
from teachers.train_teacher import train_teacher

__all__ = ["cmd_bench_pipeline", "cmd_store_bench", "cmd_teachers_bench", "cmd_guides_bench"]


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or size_config(args.size), args.overrides)
    result = run_pipeline_bench(
        cfg, steps=args.steps, workers=args.workers, replicas=args.replicas, pairs=args.pairs, quick=args.quick
    )
    result = {"config": str(args.config or size_config(args.size)), "quick": args.quick, **result}
    print(format_bench_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(args.json, result)
        print(f"wrote {args.json}")
    return 0


def cmd_store_bench(args: argparse.Namespace) -> int:
    with quieted() if args.json else contextlib.nullcontext():
        result = run_bench(args.batch_mb, args.seconds, fsync=args.fsync, min_pairs=args.pairs)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"redis {result['redis_version']}, appendfsync {result['fsync']}, ratio = the median over the "
            "raw/store pairs of store / raw bytes per second, [its 90% interval] (target >= 0.8 at 4 MB)"
        )
    return 0


def cmd_teachers_bench(args: argparse.Namespace) -> int:

    cfg = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with quieted():  # its lines are summed up below
            train_teacher(cfg, out_dir=tmp, progress=not args.json)
        seconds = time.perf_counter() - start
        table = evaluate_teacher(tmp, [1, 32], "rk4", QualitySettings.of(cfg.eval, cfg.seed))
    metric = primary_metric(table["metric_kind"])
    row1, row32 = table["rows"]
    result = {
        "config": args.config,
        "threads": torch.get_num_threads(),
        "train_seconds": round(seconds, 2),
        "budget_seconds": args.budget_s,
        "time_ratio": round(seconds / args.budget_s, 3),
        "metric": metric,
        "teacher_rk4_1": row1[metric],
        "teacher_rk4_32": row32[metric],
        "floor": table["floor"][metric],
        "quality_ratio_32_to_floor": round(row32[metric] / table["floor"][metric], 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"trained {cfg.name} teacher in {seconds:.1f}s on {result['threads']} threads "
            f"(budget {args.budget_s:.0f}s, ratio {result['time_ratio']:.2f})"
        )
        print(
            f"{metric}: rk4 1 step {row1[metric]:.3f}, rk4 32 steps {row32[metric]:.3f}, "
            f"real-vs-real floor {result['floor']:.3f}, "
            f"ratio 32-step/floor {result['quality_ratio_32_to_floor']:.2f}"
        )
    return 0


def cmd_guides_bench(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if not checkpoint_complete(cfg.teacher_path):
        with quieted():
            train_teacher(cfg, progress=not args.json)
    with quieted() if args.json else contextlib.nullcontext():
        result = run_production_bench(cfg, str(cfg.teacher_path), args.blocks)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0
