"""What a student rank reads guides through: its consumer of the run's Redis stream, or its share of an
exported Parquet directory; with the question the training loop asks before it stops (can more come?).

With ``prefetch > 0`` a background thread reads (and decodes) up to that many deliveries ahead, so store
reads overlap the rank's steps; the rank then takes them from memory. A delivery read ahead is pending in
the store under this rank's consumer name exactly like one being trained on: if the rank dies, its restart
gets it back on its first read, and the rank never calls itself exhausted while one is still in its hands.
"""

from __future__ import annotations

import queue
import threading
import time

from guide_store.open_store import open_store
from guide_store.parquet import ParquetGuideSource
from student.settings import FeedSettings

__all__ = ["GuideFeed", "consumer_name", "open_source", "take_over_consumers"]

_READ_S = 0.5  # how long one read of the background reader blocks in the store (its stop is seen this often)


def consumer_name(run: str, rank: int) -> str:
    return f"{run}-student-{rank}"


def take_over_consumers(source, run: str, rank: int, world: int) -> int:
    """Entries pending under the consumers of ranks a pool of ``world`` no longer has (an elastic pool that
    shrank) moved to this rank's consumer: rank ``j >= world`` goes to rank ``j % world``, the rank that took
    over its checkpointed records (``student.engine_state.shares``). Called before the rank's first read, so
    its own-pending recovery hands them out; returns how many entries were moved (0 for Parquet)."""
    if not hasattr(source, "pending_by_consumer"):
        return 0
    moved = 0
    prefix = consumer_name(run, 0)[:-1]
    for name, count in source.pending_by_consumer().items():
        index = name[len(prefix) :]
        if count and name.startswith(prefix) and index.isdigit() and int(index) >= world and int(index) % world == rank:
            moved += source.move_pending(name, consumer_name(run, rank))
    return moved


class GuideFeed:
    """One rank's view of its guide source: fresh deliveries, acknowledgements, and whether more can come."""

    def __init__(self, source, consumer: str, target: int | None, timeout_s: float, prefetch: int = 0):
        self.source, self.consumer, self.target, self.timeout_s = source, consumer, target, timeout_s
        self._files_done = False
        self._exhausted = False
        self._ahead: queue.Queue | None = None
        self._error: Exception | None = None
        if prefetch > 0:
            self._ahead = queue.Queue()
            self._room = threading.Semaphore(prefetch)  # deliveries the reader may hold ahead of the loop
            self._lock = threading.Lock()  # "a read is in flight" and the queue, seen together
            self._in_flight = False
            self._stop = threading.Event()
            self._reader = threading.Thread(target=self._read_ahead, name=f"{consumer}-prefetch", daemon=True)
            self._reader.start()

    # -- the background reader -------------------------------------------------------------------------------
    def _read_ahead(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._room.acquire(timeout=_READ_S):
                    continue
                got = []
                with self._lock:
                    self._in_flight = True
                try:
                    got = self.source.get(self.consumer, timeout_s=_READ_S)
                finally:
                    with self._lock:
                        assert self._ahead is not None  # this reader runs only with a prefetch queue
                        for delivery in got:
                            self._ahead.put(delivery)
                        self._in_flight = False
                if got:
                    continue
                self._room.release()
                if self.target is None or self._all_handed_out():
                    self._files_done = self.target is None
                    return  # nothing more can come to this rank
        except Exception as err:  # raised in the training loop, as the read would have been
            self._error = err

    def _holding(self) -> bool:
        if self._ahead is None:
            return False
        with self._lock:
            return self._in_flight or not self._ahead.empty()

    def close(self) -> None:
        """Stop the background reader (a delivery it still holds stays pending in the store)."""
        if self._ahead is not None:
            self._stop.set()
            self._reader.join(timeout=2 * _READ_S + 1)

    # -- what the training loop asks ---------------------------------------------------------------------------
    def _all_handed_out(self) -> bool:
        """Every record the run will produce is in the stream and every entry in it was handed to some rank
        (counted from the stream's entries, not the store's counters), and this rank holds nothing the store
        has not handed to it: its own pending entries of an earlier life were handed back (a group restored
        from its last checkpoint reads them before it may stop) and no read's reply was lost."""
        if self.target is None:  # Parquet: done once a read came back empty
            return self._files_done
        stats = self.source.stats()
        return (
            stats["produced"] >= self.target
            and stats["undelivered_entries"] == 0
            and self.source.settled(self.consumer)
        )

    def exhausted(self) -> bool:
        """Every record the run will produce has been handed to some rank and none is waiting in this rank's
        read-ahead: no new delivery will come (this rank's own pending ones aside, handed back on its first
        read). Once true, stays true."""
        self._exhausted = self._exhausted or (self._all_handed_out() and not self._holding())
        return self._exhausted

    def next(self, need: bool):
        """``(delivery or None, seconds waited)``; waits only when ``need`` and more can come."""
        start = time.monotonic()
        need = need and not self._exhausted
        while True:
            got = self._take(need)
            if got is not None:
                return got, time.monotonic() - start
            if self._ahead is None and self.target is None:
                self._files_done = True
            if not need or self.exhausted():
                return None, time.monotonic() - start
            if time.monotonic() - start > self.timeout_s:
                raise TimeoutError(
                    f"{self.consumer}: no guides for {self.timeout_s:.0f}s (store stats "
                    f"{self.source.stats()}); are the teacher actors running?"
                )

    def _take(self, need: bool):
        """One delivery or None: from the read-ahead (waiting up to a second when ``need``), else the store."""
        if self._ahead is None:
            got = self.source.get(self.consumer, timeout_s=1.0 if need else 0.0)
            return got[0] if got else None
        try:
            delivery = self._ahead.get(timeout=1.0) if need else self._ahead.get_nowait()
        except queue.Empty:
            if self._error is not None:
                raise self._error
            return None
        self._room.release()
        return delivery


def open_source(feed: FeedSettings, run: str, rank: int, world: int, data_shape: tuple[int, ...], n_guides: int):
    """This rank's guide source and how many records the run produces in all (``None`` for Parquet files,
    read to their end). Records of another shape or guide count than the run's are dead-lettered."""
    # the settings' validators require parquet_dir with Parquet files and store_url otherwise
    if feed.source == "parquet":
        assert feed.parquet_dir is not None
        return ParquetGuideSource(feed.parquet_dir, rank=rank, world_size=world, expect_shape=data_shape), None
    # no claim_idle_s: a rank holds its records until a checkpoint does, however long that takes; a restarted
    # rank gets its own pending records back under its consumer name
    assert feed.store_url is not None
    store = open_store(feed.store_url, run, dtype=feed.store.dtype, expect_shape=data_shape, expect_guides=n_guides)
    return store, feed.num_samples
