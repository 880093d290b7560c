"""The pipeline bench's pieces. The whole command (``bezier-distill bench pipeline --quick``, real Ray, Redis,
DeepSpeed pool and teacher actors, 1.5 to 3 minutes on 2 cores) is run by CI as the README's ``ci: bench``
block (``.ci/journey.sh``, step 3), which checks every figure of its JSON (``.ci/check_bench.py``)."""

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.pipeline_bench import steady_steps_per_second

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).parent / "bezier-distill")


def test_the_steady_rate_leaves_the_first_interval_out():  # median of the intervals and mean of their span
    history = [{"step": 50, "steps_per_second": 1.0, "elapsed_s": 40.0},  # start-up inside
               {"step": 100, "steps_per_second": 10.0, "elapsed_s": 45.0},
               {"step": 150, "steps_per_second": 5.0, "elapsed_s": 55.0},
               {"step": 150, "final": True, "elapsed_s": 56.0}]
    median, mean = steady_steps_per_second(history)
    assert median == pytest.approx(7.5) and mean == pytest.approx(100 / 15)
    with pytest.raises(ValueError, match="needs two"):
        steady_steps_per_second(history[:1])


def test_too_few_steps_for_a_steady_rate_are_refused_before_any_work():
    done = subprocess.run([SCRIPT, "bench", "pipeline", "--config", "configs/digits.yaml", "--steps", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--steps 60: the pool's rate needs at least two log intervals of student.log_every=50" in done.stderr
