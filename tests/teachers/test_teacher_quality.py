"""Trained teachers: quality improves with NFE and 32-step RK4 comes near the real-vs-real floor.

Stated factors (measured on 2 CPU cores; see README): toy 2-D sliced W2 at 32 RK4 steps within
1.5x of the floor; a short digits teacher (700 steps) within 2.5x of the FID floor.
"""

import pytest

from cluster.config import load_config
from student.evaluate import evaluate_teacher
from teachers.evaluation import QualitySettings
from teachers.train_teacher import train_teacher


def _metric_by_steps(table, metric):
    return {row["steps"]: row[metric] for row in table["rows"]}


def test_toy_teacher_quality(toy_teacher):
    settings = QualitySettings(n_samples=1000, slices=128)
    table = evaluate_teacher(toy_teacher, [1, 2, 4, 8, 32], "euler", settings)
    sw = _metric_by_steps(table, "sliced_w2")
    assert sw[1] > sw[2] > sw[4] > sw[32]
    rk4 = evaluate_teacher(toy_teacher, [32], "rk4", settings)
    assert rk4["rows"][0]["sliced_w2"] < 1.5 * rk4["floor"]["sliced_w2"]
    adaptive = evaluate_teacher(toy_teacher, [1], "adaptive", settings)
    assert adaptive["rows"][0]["steps"] is None and adaptive["rows"][0]["nfe"] > 6
    assert adaptive["rows"][0]["sliced_w2"] < 1.5 * adaptive["floor"]["sliced_w2"]


@pytest.mark.slow
def test_digits_teacher_quality(tmp_path):
    cfg = load_config("configs/digits.yaml", [f"run_dir={tmp_path}", "teacher.steps=700", "teacher.batch_size=64"])
    ckpt = train_teacher(cfg, progress=False)
    settings = QualitySettings(n_samples=600, kid_subset_size=200)
    table = evaluate_teacher(ckpt, [1, 4, 32], "euler", settings)
    fid = _metric_by_steps(table, "fid")
    assert fid[1] > fid[4] > fid[32]
    rk4 = evaluate_teacher(ckpt, [32], "rk4", settings)
    assert rk4["rows"][0]["fid"] < 2.5 * rk4["floor"]["fid"], rk4
