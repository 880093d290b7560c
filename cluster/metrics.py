"""Metrics shown on the Ray dashboard (``ray.util.metrics``; Prometheus names get a ``ray_`` prefix).

Made inside the process that records them (actors, the job driver), never at import time.
"""

from __future__ import annotations

__all__ = ["TeacherMetrics", "RunGauges", "StudentMetrics"]

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class TeacherMetrics:
    """Per teacher actor: records produced (counter) and seconds per guide batch (histogram)."""

    def __init__(self, run: str, worker: str):
        from ray.util.metrics import Counter, Histogram

        self.tags = {"run": run, "teacher": worker}
        self.produced = Counter("bezier_guides_produced", "guide records put into the store",
                                tag_keys=("run", "teacher"))
        self.latency = Histogram("bezier_guide_batch_seconds", "seconds to build and put one guide batch",
                                 boundaries=LATENCY_BOUNDARIES, tag_keys=("run", "teacher"))

    def record(self, records: int, seconds: float) -> None:
        self.produced.inc(records, tags=self.tags)
        self.latency.observe(seconds, tags=self.tags)


class RunGauges:
    """Per run: the store's backlog, pending and dead-lettered records, and live teacher actors."""

    def __init__(self, run: str):
        from ray.util.metrics import Gauge

        self.tags = {"run": run}
        keys = ("run",)
        self.backlog = Gauge("bezier_store_backlog_records", "records produced and not yet acknowledged", tag_keys=keys)
        self.backlog_bytes = Gauge("bezier_store_backlog_bytes", "bytes of un-acknowledged guide batches", tag_keys=keys)
        self.pending = Gauge("bezier_store_pending_records", "records delivered to a student, not acknowledged",
                             tag_keys=keys)
        self.dead = Gauge("bezier_store_dead_lettered", "records in the dead-letter stream", tag_keys=keys)
        self.produced = Gauge("bezier_store_produced", "records put into the store", tag_keys=keys)
        self.live = Gauge("bezier_live_teacher_actors", "teacher actors running", tag_keys=keys)

    def update(self, stats: dict, live_teachers: int) -> None:
        self.backlog.set(stats["backlog"], tags=self.tags)
        self.backlog_bytes.set(stats["backlog_bytes"], tags=self.tags)
        self.pending.set(stats["pending"], tags=self.tags)
        self.dead.set(stats["dead_lettered"], tags=self.tags)
        self.produced.set(stats["produced"], tags=self.tags)
        self.live.set(live_teachers, tags=self.tags)


WAIT_BOUNDARIES = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class StudentMetrics:
    """Per student rank: records consumed (counter), guide wait per step (histogram), loss, steps per second
    and the current step (gauges)."""

    def __init__(self, run: str, rank: int):
        from ray.util.metrics import Counter, Gauge, Histogram

        self.tags = {"run": run, "rank": str(rank)}
        keys = ("run", "rank")
        self.consumed = Counter("bezier_student_records_consumed", "fresh guide records a student rank trained on",
                                tag_keys=keys)
        self.wait = Histogram("bezier_student_guide_wait_seconds", "seconds a student step waited for guides",
                              boundaries=WAIT_BOUNDARIES, tag_keys=keys)
        self.loss = Gauge("bezier_student_loss", "student loss (mean over the last log interval)", tag_keys=keys)
        self.speed = Gauge("bezier_student_steps_per_second", "student optimizer steps per second", tag_keys=keys)
        self.step = Gauge("bezier_student_step", "student optimizer steps done", tag_keys=keys)

    def record_step(self, fresh_records: int, wait_s: float) -> None:
        if fresh_records:
            self.consumed.inc(fresh_records, tags=self.tags)
        self.wait.observe(wait_s, tags=self.tags)

    def record_interval(self, step: int, loss: float, steps_per_second: float) -> None:
        self.loss.set(loss, tags=self.tags)
        self.speed.set(steps_per_second, tags=self.tags)
        self.step.set(step, tags=self.tags)
