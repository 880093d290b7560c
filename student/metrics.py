"""What a student rank shows on the Ray dashboard (``ray.util.metrics``; Prometheus names get a ``ray_``
prefix). The run's gauges are in ``cluster.metrics``, the teacher actors' in ``teachers.metrics``.

Made inside the process that records them (the Ray Train worker), never at import time.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

__all__ = ["StudentMetrics"]

WAIT_BOUNDARIES = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class StudentMetrics:
    """Per student rank: records consumed (counter), guide wait per step (histogram), loss, steps per second
    and the current step (gauges)."""

    def __init__(self, run: str, rank: int):
        self.tags = {"run": run, "rank": str(rank)}
        keys = ("run", "rank")
        self.consumed = Counter(
            "bezier_student_records_consumed", "fresh guide records a student rank trained on", tag_keys=keys
        )
        self.wait = Histogram(
            "bezier_student_guide_wait_seconds",
            "seconds a student step waited for guides",
            boundaries=WAIT_BOUNDARIES,
            tag_keys=keys,
        )
        self.loss = Gauge("bezier_student_loss", "student loss (mean over the last log interval)", tag_keys=keys)
        self.speed = Gauge("bezier_student_steps_per_second", "student optimizer steps per second", tag_keys=keys)
        self.step = Gauge("bezier_student_step", "student optimizer steps done", tag_keys=keys)
        self._last: tuple[int, float, float] | None = None

    def record_step(self, fresh_records: int, wait_s: float) -> None:
        if fresh_records:
            self.consumed.inc(fresh_records, tags=self.tags)
        self.wait.observe(wait_s, tags=self.tags)
        if self._last is not None:  # Ray drops a gauge not set again within two export intervals (~20 s): a
            self._set(*self._last)  # log interval can take longer than that, so each step sets them again

    def record_interval(self, step: int, loss: float, steps_per_second: float) -> None:
        self._last = (step, loss, steps_per_second)
        self._set(step, loss, steps_per_second)

    def _set(self, step: int, loss: float, steps_per_second: float) -> None:
        self.loss.set(loss, tags=self.tags)
        self.speed.set(steps_per_second, tags=self.tags)
        self.step.set(step, tags=self.tags)
