"""A rank's guide feed reading ahead in a background thread (``student.prefetch``), against a real
redis-server: the same deliveries in the same order as reading in the step, nothing handed out twice or
left behind, a read-ahead delivery pending under the rank's name (so a restart gets it back), and a
store error raised in the training loop."""

import time

import pytest
import torch

from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore
from guide_store.schema import GuideBatch
from student.guide_feed import GuideFeed


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("feed-redis")) as server:
        yield server.url


def batch(run: str, start: int, n: int = 4) -> GuideBatch:
    g = torch.Generator().manual_seed(start)
    return GuideBatch(sample_id=torch.arange(start, start + n), x0=torch.randn(n, 2, generator=g),
                      x1=torch.randn(n, 2, generator=g), guides=[], taus=[], teachers=[], teacher_versions=[],
                      guide_rule="euler_step", coupling="generated", run=run, run_seed=1, producer="test")


def filled(url: str, run: str, blocks: int) -> RedisGuideStore:
    store = RedisGuideStore(url, run)
    for b in range(blocks):
        store.put(batch(run, 4 * b))
    return store


def drain(feed: GuideFeed) -> list[int]:
    ids = []
    while True:
        delivery, _ = feed.next(need=True)
        if delivery is None:
            return ids
        ids += delivery.batch.sample_id.tolist()
        feed.source.ack([delivery.id])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_feed_hands_out_every_record_once_in_order(redis_url, prefetch):
    run = f"order-{prefetch}"
    store = filled(redis_url, run, 6)
    feed = GuideFeed(store, "rank-0", 24, timeout_s=30, prefetch=prefetch)
    assert drain(feed) == list(range(24)) and feed.exhausted()
    feed.close()
    stats = store.stats()
    assert stats["acknowledged"] == 24 and stats["undelivered"] == 0 and stats["backlog"] == 0


def test_a_rank_is_not_exhausted_while_its_read_ahead_holds_a_delivery(redis_url):
    store = filled(redis_url, "held", 2)
    feed = GuideFeed(store, "rank-0", 8, timeout_s=30, prefetch=2)
    deadline = time.monotonic() + 10
    while store.stats()["undelivered"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.stats()["undelivered"] == 0  # both read ahead: the store has handed out everything
    assert not feed.exhausted()  # ... but this rank has not trained on them yet
    first, _ = feed.next(need=False)
    assert first.batch.sample_id.tolist() == [0, 1, 2, 3] and not feed.exhausted()
    # a rank that dies now: its restart (a new client, the same consumer name) gets the unacknowledged back
    feed.close()
    again = GuideFeed(RedisGuideStore(redis_url, "held"), "rank-0", 8, timeout_s=30, prefetch=2)
    assert sorted(drain(again)) == list(range(8)) and again.exhausted()
    again.close()


class _Failing:
    """The real store, whose second read fails as a lost connection would."""

    def __init__(self, store):
        self.store, self.reads = store, 0

    def get(self, consumer, timeout_s=1.0, count=1):
        self.reads += 1
        if self.reads == 2:
            raise ConnectionError("the store went away")
        return self.store.get(consumer, timeout_s=timeout_s, count=count)

    def stats(self):
        return self.store.stats()


def test_a_read_ahead_error_is_raised_in_the_training_loop(redis_url):
    feed = GuideFeed(_Failing(filled(redis_url, "fails", 3)), "rank-0", 12, timeout_s=30, prefetch=1)
    first, _ = feed.next(need=True)
    assert first.batch.sample_id.tolist() == [0, 1, 2, 3]
    with pytest.raises(ConnectionError, match="went away"):
        feed.next(need=True)
    feed.close()
