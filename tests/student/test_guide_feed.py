"""A rank's guide feed reading ahead in a background thread (``student.prefetch``), against a real
redis-server: the same deliveries in the same order as reading in the step, nothing handed out twice or
left behind, a read-ahead delivery pending under the rank's name (so a restart gets it back), and a
store error raised in the training loop; the store's hard moments (a read whose reply is lost, a producer
killed right after its put) leave nothing behind, and the test-only drop hides its block from every rank."""

import subprocess
import sys
import time

import pytest
import redis
import torch

from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import DROP_BLOCK_ENV, RedisGuideStore
from guide_store.schema import GuideBatch
from student.guide_feed import GuideFeed


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("feed-redis")) as server:
        yield server.url


def batch(run: str, start: int, n: int = 4) -> GuideBatch:
    g = torch.Generator().manual_seed(start)
    return GuideBatch(
        sample_id=torch.arange(start, start + n),
        x0=torch.randn(n, 2, generator=g),
        x1=torch.randn(n, 2, generator=g),
        guides=[],
        taus=[],
        teachers=[],
        teacher_versions=[],
        guide_rule="euler_step",
        coupling="generated",
        run=run,
        run_seed=1,
        producer="test",
    )


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

    def settled(self, consumer):
        return self.store.settled(consumer)


def test_a_read_ahead_error_is_raised_in_the_training_loop(redis_url):
    feed = GuideFeed(_Failing(filled(redis_url, "fails", 3)), "rank-0", 12, timeout_s=30, prefetch=1)
    first, _ = feed.next(need=True)
    assert first.batch.sample_id.tolist() == [0, 1, 2, 3]
    with pytest.raises(ConnectionError, match="went away"):
        feed.next(need=True)
    feed.close()


def lose_the_next_read_reply(store: RedisGuideStore) -> dict:
    """The next XREADGROUP that hands out entries has its reply lost on the way back, as a dropped connection
    would: the server delivered (the entries are pending under the consumer), the client never saw them, and
    redis-py's retry sends the read again. Returns what happened (``lost``: the entry ids the lost reply held)."""
    real, seen = store.client.parse_response, {"lost": []}

    def parse(conn, command_name, **options):
        reply = real(conn, command_name, **options)
        entries = [e for _, items in (reply or []) for e in items] if command_name == "XREADGROUP" else []
        if entries and not seen["lost"]:
            seen["lost"] = [e[0].decode() for e in entries]
            raise redis.ConnectionError("the reply was lost (test)")
        return reply

    store.client.parse_response = parse
    return seen


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_read_whose_reply_was_lost_is_handed_out_again(redis_url, prefetch):
    run = f"lost-reply-{prefetch}"
    store = filled(redis_url, run, 3)
    seen = lose_the_next_read_reply(store)
    feed = GuideFeed(store, "rank-0", 12, timeout_s=20, prefetch=prefetch)
    ids = drain(feed)
    feed.close()
    assert seen["lost"], "no reply was lost: the test did not take place"
    # before: the lost entry stayed pending under rank-0 for good and the feed called itself exhausted
    assert sorted(ids) == list(range(12)), ids
    stats = store.stats()
    assert stats["pending_entries"] == 0 and stats["acknowledged"] == 12, stats


PRODUCER_DIES_BEFORE_SIZE = """
import os, sys, torch
from guide_store.redis_store import RedisGuideStore
from guide_store.schema import GuideBatch

def batch(start, n=4):
    g = torch.Generator().manual_seed(start)
    return GuideBatch(sample_id=torch.arange(start, start + n), x0=torch.randn(n, 2, generator=g),
                      x1=torch.randn(n, 2, generator=g), guides=[], taus=[], teachers=[], teacher_versions=[],
                      guide_rule="euler_step", coupling="generated", run=sys.argv[2], run_seed=1, producer="test")

store = RedisGuideStore(sys.argv[1], sys.argv[2])
store.put(batch(0))
real = store.client.hset
def hset(name, *args, **kwargs):  # the moment after the entry landed and before its size was recorded
    if name == store.sizes:
        os._exit(9)
    return real(name, *args, **kwargs)
store.client.hset = hset
store.put(batch(4))
"""


def test_a_producer_killed_right_after_its_put_leaves_no_phantom_backlog(redis_url):
    run = "phantom"
    subprocess.run([sys.executable, "-c", PRODUCER_DIES_BEFORE_SIZE, redis_url, run], timeout=120)
    store = RedisGuideStore(redis_url, run)
    assert store.stats()["stream_entries"] == 2  # both entries landed
    feed = GuideFeed(store, "rank-0", 8, timeout_s=20)
    held = [feed.next(need=True)[0] for _ in range(2)]  # a rank holds both until its next checkpoint
    assert sorted(i for d in held for i in d.batch.sample_id.tolist()) == list(range(8))
    # before: the entry whose size was never recorded counted as undelivered while held, so the rank never
    # called itself exhausted and its next read waited out guide_timeout_s (a failed run)
    assert feed.exhausted()
    stats = store.stats()
    assert stats["pending"] == 8 and stats["undelivered"] == 0 and stats["undelivered_entries"] == 0, stats
    assert store.ack([d.id for d in held]) == 8 and store.stats()["acknowledged"] == 8


def test_the_test_only_drop_discards_its_block_unread(redis_url, monkeypatch):
    run = "drop"
    monkeypatch.setenv(DROP_BLOCK_ENV, "1")
    store = RedisGuideStore(redis_url, run)
    assert [store.put(batch(run, 4 * b), key=f"block-{b}") is None for b in range(3)] == [False, True, False]
    monkeypatch.delenv(DROP_BLOCK_ENV)
    stats = store.stats()
    assert stats["produced"] == 12 and stats["stream_entries"] == 2, stats
    feed = GuideFeed(store, "rank-0", 12, timeout_s=20)
    assert drain(feed) == [0, 1, 2, 3, 8, 9, 10, 11] and feed.exhausted()  # no rank ever sees block 1
    feed.close()
