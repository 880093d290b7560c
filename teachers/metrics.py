"""What a teacher actor shows on the Ray dashboard (``ray.util.metrics``; Prometheus names get a ``ray_``
prefix). The run's gauges are in ``cluster.metrics``, the student ranks' in ``student.metrics``.

Made inside the process that records them (the actor), never at import time.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

__all__ = ["TeacherMetrics"]

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class TeacherMetrics:
    """Per teacher actor: records produced (counter) and seconds per guide batch (histogram)."""

    def __init__(self, run: str, worker: str):
        self.tags = {"run": run, "teacher": worker}
        self.produced = Counter(
            "bezier_guides_produced", "guide records put into the store", tag_keys=("run", "teacher")
        )
        self.latency = Histogram(
            "bezier_guide_batch_seconds",
            "seconds to build and put one guide batch",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("run", "teacher"),
        )

    def record(self, records: int, seconds: float) -> None:
        self.produced.inc(records, tags=self.tags)
        self.latency.observe(seconds, tags=self.tags)
