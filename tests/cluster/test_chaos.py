"""``bezier-distill chaos`` on a small config: every fault is injected and nothing is lost."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "bezier-distill"


@pytest.mark.slow
@pytest.mark.alone  # its third teacher kill waits for 80% of production, and a busy machine can finish first
# (32 blocks of 64, not 8 of 256: the kill at 80% has 6 blocks left to land in, not 1 or 2)
def test_chaos_loses_nothing_and_dead_letters_every_malformed_entry(tmp_path):
    out = subprocess.run(
        [
            str(SCRIPT),
            "chaos",
            str(REPO / "configs" / "toy2d.yaml"),
            "--malformed",
            "100",
            "--undisturbed",
            "0",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "teacher.steps=300",
            "--set",
            "guides.num_samples=2048",
            "--set",
            "guides.block_size=64",
            "--set",
            "guides.coupling_steps=16",
            "--set",
            "student.steps=150",
            "--set",
            "student.checkpoint_every=50",
            "--set",
            "eval.n_samples=500",
            "--set",
            "eval.steps=[1]",
            "--set",
            "student.eval_steps=[1]",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "toy2d-chaos" / "chaos_report.json").read_text())
    kinds = [f["fault"] for f in report["faults"]]
    assert kinds.count("teacher actor killed") == 3 and "student worker killed" in kinds, kinds
    assert report["run_faults"]["teacher_restarts"] == 3, report["run_faults"]  # each kill hit a live actor
    assert "redis-server killed" in kinds and "malformed entries written" in kinds, kinds
    assert "student rank killed after_checkpoint" in kinds and "student rank killed after_final_report" in kinds
    assert report["faults_not_landed"] == [] and report["ledger_error"] is None, report["faults_not_landed"]
    assert report["produced"] == 2048 and report["pending"] == 0
    # from ids, not counters: every planned record trained, none left pending, at most one batch twice per fault
    ledger = report["ledger"]
    assert report["lost"] == ledger["lost"] == 0 and ledger["trained"] == ledger["planned"] == 2048, ledger
    assert ledger["left_pending"] == 0 and ledger["trained_twice"] <= 256 * len(kinds), ledger
    assert report["trained_ids_fraction"] == 1.0 and report["duplicates"] <= 256 * len(kinds)
    assert report["malformed_injected"] == 100 and report["malformed_dead_lettered"] == 100
    # the comparison with undisturbed runs is the full command's (README); here only the run under faults
    assert math.isfinite(report["quality"]["chaos"]) and report["quality"]["undisturbed"] == []
    assert report["quality"]["ratio"] is None
