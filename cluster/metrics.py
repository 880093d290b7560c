"""The run's metrics on the Ray dashboard (``ray.util.metrics``; Prometheus names get a ``ray_`` prefix).
The teacher actors' and the student ranks' are emitted where they are recorded: ``teachers.metrics``,
``student.metrics``.

Made inside the process that records them (the controller actor), never at import time.
"""

from __future__ import annotations

from ray.util.metrics import Gauge

__all__ = ["RunGauges"]


class RunGauges:
    """Per run: the store's backlog, pending and dead-lettered records, and live teacher actors."""

    def __init__(self, run: str):
        self.tags = {"run": run}
        keys = ("run",)
        self.backlog = Gauge("bezier_store_backlog_records", "records produced and not yet acknowledged", tag_keys=keys)
        self.backlog_bytes = Gauge(
            "bezier_store_backlog_bytes", "bytes of un-acknowledged guide batches", tag_keys=keys
        )
        self.pending = Gauge(
            "bezier_store_pending_records", "records delivered to a student, not acknowledged", tag_keys=keys
        )
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
