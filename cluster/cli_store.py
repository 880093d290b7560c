"""``store export`` and ``store stats``: a run's guide store (their parser: ``cluster.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from guide_store.open_store import open_run_store
from guide_store.parquet import export_store

__all__ = ["cmd_store_export", "cmd_store_stats"]


def _open_store(args: argparse.Namespace):

    return open_run_store(args.run, Path(args.run_dir) / args.run / "redis", args.url, must_exist=True)


def cmd_store_export(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        summary = export_store(store, args.to)
    print(f"exported {summary['records']} records in {summary['batches']} batches to {summary['directory']}")
    for item in summary["skipped"]:
        print(f"skipped entry {item['entry']}: {item['reason']}", file=sys.stderr)
    return 0


def cmd_store_stats(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        print(json.dumps({"run": args.run, **store.stats(), "dead_letters": store.dead_letters(20)}, indent=2))
    return 0
