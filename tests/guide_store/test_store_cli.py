"""`bezier-distill store ...` against a run's embedded store on disk, and the benchmark script."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from guide_store.open_store import open_run_store

from guide_factory import make_batch

SCRIPT = str(Path(sys.executable).parent / "bezier-distill")


def test_export_and_stats_from_a_runs_embedded_store(tmp_path):
    with open_run_store("demo", tmp_path / "demo" / "redis") as store:
        for k in range(3):
            store.put(make_batch(4 * k, guides=2, run="demo"))
        got = store.get("c", count=1)
        store.ack([d.id for d in got])
    out = subprocess.run([SCRIPT, "store", "stats", "demo", "--run-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["produced"] == 12 and stats["acknowledged"] == 4 and stats["undelivered"] == 8
    out = subprocess.run(
        [SCRIPT, "store", "export", "demo", "--run-dir", str(tmp_path), "--to", str(tmp_path / "pq")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "exported 8 records in 2 batches" in out.stdout
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp_path / "pq").glob("*.parquet")) == 8


def test_missing_run_is_named(tmp_path):
    out = subprocess.run([SCRIPT, "store", "stats", "nope", "--run-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "no guide store for run 'nope'" in out.stderr


def test_bench_measures_both_paths():
    out = subprocess.run(
        [SCRIPT, "store", "bench", "--batch-mb", "0.5", "--seconds", "0.5", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["rows"][0]
    assert row["raw_MBps"] > 0 and row["store_MBps"] > 0
    ratios = sorted(raw / store for raw, store in row["pairs"])  # the ratio is of the pairs it measured
    assert len(ratios) == row["rounds"] >= 5 and all(raw > 0 and store > 0 for raw, store in row["pairs"])
    assert abs(row["ratio"] - statistics.median(ratios)) < 0.01
    low, high = row["ratio_interval"]  # order statistics of the pair ratios, around the median
    assert low <= row["ratio"] <= high and {low, high} <= {round(r, 3) for r in ratios}
    assert row["interval_coverage"] >= 0.9
