"""Which quality metrics a study reports for each kind of data, and how its tables and figures name them
(one place for ``cluster.study_report`` and ``cluster.study_plots``; the metrics are ``teachers.evaluation``'s)."""

from __future__ import annotations

from teachers.evaluation import METRICS

__all__ = ["METRICS", "METRIC_NAMES", "to_teacher_best"]

METRIC_NAMES = {
    "fid": "FID",
    "kid": "KID",
    "sliced_w2": "sliced W2",
    "energy": "energy distance (an MMD)",
    "fid_to_teacher_best": "FID / teacher's best",
    "sliced_w2_to_teacher_best": "sliced W2 / teacher's best",
}


def to_teacher_best(metric: str) -> str:
    """The name of ``metric`` over the teacher's best row of the same seed (the run report's name for it too)."""
    return f"{metric}_to_teacher_best"
