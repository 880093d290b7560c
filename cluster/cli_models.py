"""The model-folder verbs: ``train-teacher``, ``eval`` and ``sample`` (their parser: ``cluster.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path


from cluster.config import load_config
from guide_store.atomic import write_json_atomically
from student.evaluate import evaluate_loaded, load_model_and_data, sample_model
from teachers.evaluation import QualitySettings, format_table
from teachers.train_teacher import train_teacher

__all__ = ["cmd_train_teacher", "cmd_eval", "cmd_sample"]


def cmd_train_teacher(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    train_teacher(cfg, out_dir=args.out, progress=not args.no_progress)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    loaded, data, cfg = load_model_and_data(args.checkpoint, args.convention, config)
    settings = QualitySettings.of(
        cfg.eval, cfg.seed, n_samples=args.n_samples, feature_extractor=args.feature_extractor
    )
    table = evaluate_loaded(loaded, data, args.steps, args.solver, settings)
    print(format_table(table))
    default = "eval_student.json" if loaded.kind == "student" else f"eval_{args.solver}.json"
    out = Path(args.out) if args.out else Path(args.checkpoint) / default
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, table)
    print(f"wrote {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    path = sample_model(
        args.checkpoint, args.steps, args.solver, args.out, n=args.n, convention=args.convention, config=config
    )
    print(f"wrote {path}")
    return 0
