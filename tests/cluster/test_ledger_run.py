"""The id ledger seen to fail: ``bezier-distill run configs/smoke.yaml`` with the test-only drop of one block
ends non-zero, says which block, and its report is ``status: failed`` with ``ledger.lost_blocks`` naming it.
(The same run without the drop is the README's quick start, which CI runs and checks: ledger lost 0.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guide_store.redis_store import DROP_BLOCK_ENV

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "bezier-distill"

pytestmark = pytest.mark.slow


def test_a_run_that_lost_a_block_fails_and_names_it(tmp_path):
    env = {**os.environ, DROP_BLOCK_ENV: "3"}
    out = subprocess.run(
        [
            str(SCRIPT),
            "run",
            str(REPO / "configs" / "smoke.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "student.finetune.steps=0",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "from blocks [3]" in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert report["status"] == "failed" and "lost" in report["error"], report.get("error")
    ledger = report["ledger"]
    assert ledger["lost_blocks"] == [3] and ledger["lost"] == 64 and ledger["planned"] == 512, ledger
    assert ledger["trained"] == 512 - 64 and ledger["left_pending"] == 0 and ledger["trained_twice"] == 0, ledger
