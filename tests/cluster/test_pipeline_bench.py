"""The pipeline bench's pieces. The whole command (``bezier-distill bench pipeline --quick``, real Ray, Redis,
DeepSpeed pool and teacher actors, 1.5 to 3 minutes on 2 cores) is run by CI as the README's ``ci: bench``
block (``.ci/journey.sh``, step 3), which checks every figure of its JSON (``.ci/check_bench.py``)."""

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.pipeline_bench import _production_pair, _student_pair, _summary, steady_steps_per_second
from guide_store.bench import median_interval

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).parent / "bezier-distill")


def test_the_steady_rate_leaves_the_first_interval_out():  # median of the intervals and mean of their span
    history = [
        {"step": 50, "steps_per_second": 1.0, "elapsed_s": 40.0},  # start-up inside
        {"step": 100, "steps_per_second": 10.0, "elapsed_s": 45.0},
        {"step": 150, "steps_per_second": 5.0, "elapsed_s": 55.0},
        {"step": 150, "final": True, "elapsed_s": 56.0},
    ]
    median, mean = steady_steps_per_second(history)
    assert median == pytest.approx(7.5) and mean == pytest.approx(100 / 15)
    with pytest.raises(ValueError, match="needs two"):
        steady_steps_per_second(history[:1])


def test_a_ratio_interval_is_the_order_statistics_around_the_median():
    got = median_interval([0.9, 0.7, 1.1, 0.8, 1.0])  # 5 pairs: the whole range, coverage 1 - 2/32
    assert got == {"median": 0.9, "interval": [0.7, 1.1], "coverage": 0.9375}
    assert median_interval([0.8]) == {"median": 0.8, "interval": [0.8, 0.8], "coverage": 0.0}  # --quick: one pair
    assert median_interval([1, 2, 3, 4])["coverage"] == 0.875  # too few for 90%: the range, its coverage said
    got = median_interval(list(range(20)))  # enough pairs: inner order statistics, still at least 90%
    assert got["interval"] == [5, 14] and 0.9 <= got["coverage"] < 0.97


def test_each_pair_divides_by_its_own_baselines_and_a_row_takes_the_medians():
    one_thread = [[32, 180.0], [64, 250.0], [128, 300.0], [256, 290.0]]
    pairs = [
        _production_pair(2, raw, one_thread, {"records_per_s": got, "startup_s": 1.0})
        for raw, got in ((350.0, 450.0), (300.0, 420.0), (400.0, 480.0))
    ]
    assert pairs[0]["best_block_size"] == 128 and pairs[0]["one_thread_records_per_s"] == 300.0
    assert pairs[0]["perfect_scaling_records_per_s"] == 600.0 and pairs[0]["ratio_perfect_scaling"] == 0.75
    assert pairs[0]["ratio"] == round(450 / 350, 3)
    row = _summary(pairs, ("plain_records_per_s", "pipeline_records_per_s"))
    assert row["ratio"] == 1.286 and row["ratio_interval"] == [1.2, 1.4]  # median of 450/350, 420/300, 480/400
    assert row["ratio_perfect_scaling"] == 0.75 and row["pipeline_records_per_s"] == 450.0
    student = _student_pair(
        2,
        {"records_per_second": 2000.0, "mean_records_per_second": 1900.0, "busy_fraction": None},
        {"records_per_second": 1400.0},
        {
            "records_per_second": 1800.0,
            "mean_records_per_second": 1750.0,
            "busy_fraction": None,
            "guide_wait_s_rank0": 0.0,
            "wall_s": 30.0,
        },
    )
    assert student["ratio"] == 0.9 and student["perfect_scaling_records_per_s"] == 2800.0
    assert student["ratio_perfect_scaling"] == round(1800 / 2800, 3)


def test_too_few_steps_for_a_steady_rate_are_refused_before_any_work():
    done = subprocess.run(
        [SCRIPT, "bench", "pipeline", "--config", "configs/digits.yaml", "--steps", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--steps 60: the pool's rate needs at least two log intervals of student.log_every=50" in done.stderr
    done = subprocess.run(
        [SCRIPT, "bench", "pipeline", "--config", "configs/digits.yaml", "--pairs", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--pairs needs a count >= 1" in done.stderr
