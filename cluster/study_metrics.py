"""Which quality metrics a study reports for each kind of data, and how its tables and figures name them
(one place for ``cluster.study_report`` and ``cluster.study_plots``; the metrics are ``teachers.evaluation``'s)."""

from __future__ import annotations

__all__ = ["METRICS", "METRIC_NAMES"]

METRICS = {"image": ("fid", "kid"), "vector": ("sliced_w2", "energy")}
METRIC_NAMES = {"fid": "FID", "kid": "KID", "sliced_w2": "sliced W2", "energy": "energy distance (an MMD)"}
