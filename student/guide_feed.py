"""What a student rank reads guides through: its consumer of the run's Redis stream, or its share of an
exported Parquet directory; with the question the training loop asks before it stops (can more come?)."""

from __future__ import annotations

import time

from guide_store.parquet import ParquetGuideSource
from guide_store.redis_store import RedisGuideStore
from student.settings import FeedSettings

__all__ = ["GuideFeed", "consumer_name", "open_source"]


def consumer_name(run: str, rank: int) -> str:
    return f"{run}-student-{rank}"


class GuideFeed:
    """One rank's view of its guide source: fresh deliveries, acknowledgements, and whether more can come."""

    def __init__(self, source, consumer: str, target: int | None, timeout_s: float):
        self.source, self.consumer, self.target, self.timeout_s = source, consumer, target, timeout_s
        self._files_done = False
        self._exhausted = False

    def _all_handed_out(self) -> bool:
        if self.target is None:  # Parquet: done once a read came back empty
            return self._files_done
        stats = self.source.stats()
        return stats["produced"] >= self.target and stats["undelivered"] == 0

    def exhausted(self) -> bool:
        """Every record the run will produce has been handed to some rank: no new delivery will come (this
        rank's own pending ones aside, handed back on its first read). Once true, stays true."""
        self._exhausted = self._exhausted or self._all_handed_out()
        return self._exhausted

    def next(self, need: bool):
        """``(delivery or None, seconds waited)``; waits only when ``need`` and more can come."""
        start = time.monotonic()
        need = need and not self._exhausted
        while True:
            got = self.source.get(self.consumer, timeout_s=1.0 if need else 0.0)
            if got:
                return got[0], time.monotonic() - start
            if self.target is None:
                self._files_done = True
            if not need or self.exhausted():
                return None, time.monotonic() - start
            if time.monotonic() - start > self.timeout_s:
                raise TimeoutError(f"{self.consumer}: no guides for {self.timeout_s:.0f}s (store stats "
                                   f"{self.source.stats()}); are the teacher actors running?")


def open_source(feed: FeedSettings, run: str, rank: int, world: int, data_shape: tuple[int, ...], n_guides: int):
    """This rank's guide source and how many records the run produces in all (``None`` for Parquet files,
    read to their end). Records of another shape or guide count than the run's are dead-lettered."""
    if feed.source == "parquet":
        return ParquetGuideSource(feed.parquet_dir, rank=rank, world_size=world, expect_shape=data_shape), None
    # no claim_idle_s: a rank holds its records until a checkpoint does, however long that takes; a restarted
    # rank gets its own pending records back under its consumer name
    store = RedisGuideStore(feed.store_url, run, dtype=feed.store.dtype, expect_shape=data_shape,
                            expect_guides=n_guides)
    return store, feed.num_samples