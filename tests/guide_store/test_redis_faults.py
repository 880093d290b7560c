"""Fault tests against a real redis-server: dead consumers, server crashes, backpressure, bad payloads."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pytest
import redis

from guide_store.codec import encode_batch, encode_record_batch
from guide_store.embedded import EmbeddedRedis
from guide_store.open_store import PASSWORD_FILE, open_run_store, run_redis_url
from guide_store.redis_store import DEAD_PAYLOAD_BYTES, BackpressureTimeout, RedisGuideStore
from guide_store.schema import META_VERSION, to_record_batch

from guide_factory import make_batch


def balanced(stats):
    return stats["produced"] == stats["acknowledged"] + stats["pending"] + stats["dead_lettered"] + stats["undelivered"]


def test_dead_consumer_records_are_reclaimed(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name, claim_idle_s=1.0)
    for k in range(3):
        store.put(make_batch(4 * k))
    # a real process takes two batches and is killed before it acknowledges them
    script = textwrap.dedent(f"""
        import sys, time
        from guide_store.redis_store import RedisGuideStore
        s = RedisGuideStore({redis_server.url!r}, {run_name!r})
        got = s.get("doomed", timeout_s=5, count=2)
        print(",".join(d.id for d in got), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    taken = proc.stdout.readline().strip().split(",")
    proc.kill()
    proc.wait()
    assert len(taken) == 2
    other = store.get("survivor", timeout_s=0.2, count=5)
    assert [d.id for d in other] not in ([], taken)  # the third batch only: the others are not yet idle
    assert {d.id for d in other}.isdisjoint(taken)
    store.ack([d.id for d in other])
    time.sleep(1.1)
    reclaimed = store.get("survivor", timeout_s=0.2, count=5)
    assert sorted(d.id for d in reclaimed) == sorted(taken) and all(d.reclaimed for d in reclaimed)
    assert store.ack([d.id for d in reclaimed]) == 8
    s = store.stats()
    assert s["produced"] == s["acknowledged"] == 12 and s["pending"] == 0 and s["reclaimed"] == 8


def test_server_crash_and_restart_loses_nothing(tmp_path):
    with EmbeddedRedis(tmp_path / "r", fsync="always") as server:
        store = RedisGuideStore(server.url, "crash", claim_idle_s=0.5)
        for k in range(6):
            store.put(make_batch(4 * k, run="crash"))
        got = store.get("c1", count=3)
        store.ack([got[0].id, got[1].id])
        acked = {int(i) for d in got[:2] for i in d.batch.sample_id}
        server.kill()  # SIGKILL: no shutdown, no final write
        server.restart()
        # the same client objects carry on (reconnect with backoff)
        s = store.stats()
        assert s["produced"] == 24 and s["acknowledged"] == 8 and s["pending"] == 4 and s["undelivered"] == 12
        time.sleep(0.6)
        seen = []
        while batch := store.get("c2", timeout_s=0.2, count=8):
            store.ack([d.id for d in batch])
            seen += [int(i) for d in batch for i in d.batch.sample_id]
        assert sorted(seen) == sorted(set(range(24)) - acked)  # nothing acknowledged came back, nothing lost
        assert store.stats()["acknowledged"] == 24


def test_producer_survives_restarts_without_loss_or_duplicates(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as server:
        store = RedisGuideStore(server.url, "restart")
        errors, done = [], []

        def produce():
            try:
                for k in range(60):
                    store.put(make_batch(4 * k, run="restart"))
                done.append(True)
            except Exception as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(err)

        t = threading.Thread(target=produce)
        t.start()
        for _ in range(3):  # crash the server under the producer, three times
            time.sleep(0.15)
            server.kill()
            time.sleep(0.3)
            server.start()
        t.join(timeout=120)
        assert not errors and done
        seen = []
        while got := store.get("c", timeout_s=0.3, count=16):
            store.ack([d.id for d in got])
            seen += [int(i) for d in got for i in d.batch.sample_id]
        assert sorted(seen) == list(range(240))  # every block exactly once
        s = store.stats()
        assert s["produced"] == s["acknowledged"] == 240


def test_producer_blocks_at_backlog_bound_and_resumes(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name, max_backlog_records=8, put_timeout_s=30)
    store.put(make_batch(0))
    store.put(make_batch(4))
    finished = threading.Event()
    t = threading.Thread(target=lambda: (store.put(make_batch(8)), finished.set()))
    t.start()
    time.sleep(0.5)
    assert not finished.is_set() and store.stats()["produced"] == 8  # blocked at the bound
    got = store.get("c", count=1)
    store.ack([got[0].id])
    assert finished.wait(5)
    t.join()
    assert store.stats()["produced"] == 12


def test_backpressure_timeout_is_clear(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name, max_backlog_bytes=1 << 20, put_timeout_s=0.3)
    store.put(make_batch(0, n=300, shape=(3, 32, 32), guides=0))  # ~2.4 MB: admitted, the backlog was empty
    with pytest.raises(
        BackpressureTimeout, match=r"300 undelivered records .* above the bound .* are the students consuming"
    ):
        store.put(make_batch(300))


def _bad_payloads():
    good = to_record_batch(make_batch(0))
    meta = dict(good.schema.metadata)
    meta[META_VERSION] = b"7"
    nan = make_batch(0)
    nan.x1[0, 0, 0, 0] = float("nan")
    inf = make_batch(0)
    inf.guides[0][1, 0, 0, 0] = float("-inf")
    f64 = pa.FixedShapeTensorArray.from_numpy_ndarray(make_batch(0).x0.double().numpy())
    wrong_dtype = good.set_column(good.schema.get_field_index("x0"), pa.field("x0", f64.type), f64)
    full = encode_batch(make_batch(0)).to_pybytes()
    return {
        "truncated": (full[: len(full) // 3], "truncated or corrupt"),
        "garbage": (b"\x00" * 50, "truncated or corrupt"),
        "schema version": (encode_record_batch(good.replace_schema_metadata(meta)).to_pybytes(), "schema version 7"),
        "shape": (encode_batch(make_batch(0, shape=(2,))).to_pybytes(), r"record shape \[2\], expected \[1, 8, 8\]"),
        "dtype": (
            encode_record_batch(wrong_dtype.replace_schema_metadata(good.schema.metadata)).to_pybytes(),
            "dtype double",
        ),
        "nan": (encode_batch(nan).to_pybytes(), "'x1' holds NaN or Inf"),
        "inf": (encode_batch(inf).to_pybytes(), "'g1' holds NaN or Inf"),
    }


def test_every_bad_payload_is_dead_lettered_with_reason(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name, expect_shape=(1, 8, 8))
    bad = _bad_payloads()
    store.put(make_batch(1000))
    for name, (payload, _) in bad.items():
        store.put_raw(payload, 4, producer=f"bad-{name}", key=name)
    store.client.xadd(store.stream, {"n": 1, "v": 1})  # an entry with no payload at all
    store.put(make_batch(2000))
    good = []
    while got := store.get("c", timeout_s=0.2, count=3):
        store.ack([d.id for d in got])
        good += [int(d.batch.sample_id[0]) for d in got]
    assert good == [1000, 2000]
    letters = {d["producer"]: d["reason"] for d in store.dead_letters()}
    for name, (_, reason) in bad.items():
        assert __import__("re").search(reason, letters[f"bad-{name}"]), (name, letters[f"bad-{name}"])
    assert any("no payload" in r for r in letters.values())
    s = store.stats()
    assert s["dead_lettered"] == 4 * len(bad) and s["dead_entries"] == len(bad) + 1
    assert s["produced"] == s["acknowledged"] + s["dead_lettered"] and balanced(s)
    assert s["stream_entries"] == 0 and s["backlog_bytes"] == 0  # acknowledged and dead entries are freed


def test_password_and_acl_user(tmp_path):
    with EmbeddedRedis(tmp_path / "auth", password="s3cret") as server:
        store = RedisGuideStore(server.url, "auth")
        store.put(make_batch(0, run="auth"))
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser("student", enabled=True, passwords=["+pw2"], keys=["bd:*"], commands=["+@all"])
        as_user = RedisGuideStore(f"redis://student:pw2@127.0.0.1:{server.port}/0", "auth")
        assert len(as_user.get("c", count=1)[0].batch) == 4
        with pytest.raises(redis.AuthenticationError):
            RedisGuideStore(f"redis://:wrong@127.0.0.1:{server.port}/0", "auth")


def test_default_port_is_never_assumed(redis_server):
    assert redis_server.port != 6379


def test_a_consumer_that_comes_back_gets_its_own_pending_records_first(redis_server, run_name):
    """A student rank holds its records unacknowledged until a checkpoint; when it dies and its worker group
    restarts, the rank (same consumer name) is handed them back, and nobody else takes them meanwhile."""
    store = RedisGuideStore(redis_server.url, run_name)
    for k in range(4):
        store.put(make_batch(4 * k))
    held = store.get("rank-1", timeout_s=1, count=2)  # then rank 1 dies without acknowledging
    other = RedisGuideStore(redis_server.url, run_name)
    rank0 = other.get("rank-0", timeout_s=0.2, count=10)
    assert {d.id for d in rank0}.isdisjoint(d.id for d in held) and len(rank0) == 2  # no idle-time stealing
    reborn = RedisGuideStore(redis_server.url, run_name)  # the restarted rank, a new process
    back = reborn.get("rank-1", timeout_s=0.2, count=5)
    assert [d.id for d in back] == [d.id for d in held] and all(d.reclaimed for d in back)
    assert reborn.get("rank-1", timeout_s=0.2, count=5) == []  # handed back once, then only new ones
    assert reborn.ack([d.id for d in back]) + other.ack([d.id for d in rank0]) == 16
    s = store.stats()
    assert s["produced"] == s["acknowledged"] == 16 and s["pending"] == 0 and balanced(s)


def _column(rb: pa.RecordBatch, name: str, values) -> pa.RecordBatch:
    return rb.set_column(rb.schema.get_field_index(name), name, pa.array(values))


def test_poison_never_blocks_and_never_skews_the_counters(redis_server, run_name):
    """Entries of the kinds seen in a fault-injection run: each is dead-lettered with its reason, the reader
    goes on, and the counters come from the store's accounting, not from the entries' own fields."""
    store = RedisGuideStore(redis_server.url, run_name, expect_shape=(1, 8, 8))
    good = to_record_batch(make_batch(100))
    meta = good.schema.metadata
    payload = lambda rb: encode_record_batch(rb.replace_schema_metadata(meta)).to_pybytes()
    raw = {  # written past the store, as a stray client could: never counted as produced
        "n not a number": {"n": "four", "bytes": 10, "v": 1, "payload": payload(good)},
        "bytes where numbers go": {"n": b"\xff\xfe", "bytes": b"\x00", "v": 1, "payload": payload(good)},
        "n says 40000": {"n": 40000, "bytes": 10, "v": 1, "payload": encode_batch(make_batch(200)).to_pybytes()},
    }
    put = {  # through put_raw: counted as produced, so they must be counted as dead-lettered too
        "string tau1": payload(_column(good, "tau1", ["a"] * 4)),
        "string run_seed": payload(_column(good, "run_seed", ["seven"] * 4)),
        "string sample_id": payload(_column(good, "sample_id", ["x", "y", "z", "w"])),
        "another run": encode_batch(make_batch(300, run="someone-else")).to_pybytes(),
    }
    store.put(make_batch(0))
    for name, fields in raw.items():
        store.client.xadd(store.stream, {**fields, "producer": name})
    for name, data in put.items():
        store.put_raw(data, 4, producer=name, key=name)
    store.put(make_batch(4))
    store.put(make_batch(2, producer="repeats ids 2..5"))  # its ids were delivered in the first two entries
    store.put(make_batch(8))
    good_ids = []
    while got := store.get("c", timeout_s=0.2, count=3):
        store.ack([d.id for d in got])
        good_ids += [int(i) for d in got for i in d.batch.sample_id]
    assert good_ids == list(range(12))
    letters = {d["producer"]: d["reason"] for d in store.dead_letters()}
    assert set(letters) == {*raw, *put, "repeats ids 2..5"}, letters
    assert "already delivered" in letters["repeats ids 2..5"] and "someone-else" in letters["another run"]
    assert "says 40000 records" in letters["n says 40000"] and "not a record count" in letters["n not a number"]
    s = store.stats()
    assert s["produced"] == 16 + 4 * len(put) and s["acknowledged"] == 12
    assert s["dead_lettered"] == 4 * len(put) + 4 and balanced(s) and s["backlog"] == 0
    assert s["stream_entries"] == 0 and s["backlog_bytes"] == 0


def test_dead_letters_keep_a_bounded_prefix_of_the_payload(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name)
    store.put_raw(b"\x01" * 3_000_000, 4, producer="big", key="big")
    assert store.get("c", timeout_s=0.2) == []
    (letter,) = store.dead_letters()
    assert letter["payload_bytes"] == "3000000"
    ((_, fields),) = store.client.xrange(store.dead)
    assert len(fields[b"payload_prefix"]) == DEAD_PAYLOAD_BYTES


def test_records_a_consumer_holds_do_not_stall_the_producers(redis_server, run_name):
    """The record bound counts what no consumer was handed: a rank that holds its records until its next
    checkpoint must be able to read more before it can checkpoint."""
    store = RedisGuideStore(redis_server.url, run_name, max_backlog_records=8, put_timeout_s=5)
    store.put(make_batch(0))
    store.put(make_batch(4))
    held = store.get("c", timeout_s=0.2, count=2)  # handed out, not acknowledged
    store.put(make_batch(8))  # does not block
    store.put(make_batch(12))
    with pytest.raises(BackpressureTimeout):
        RedisGuideStore(redis_server.url, run_name, max_backlog_records=8, put_timeout_s=0.3).put(make_batch(16))
    assert len(held) == 2 and store.stats()["pending"] == 8


def test_a_batch_of_another_guide_count_is_dead_lettered_for_a_reader_that_expects_two(redis_server, run_name):
    store = RedisGuideStore(redis_server.url, run_name, expect_guides=2)
    store.put(make_batch(0, guides=1, producer="one guide"))
    store.put(make_batch(4))
    (got,) = store.get("c", timeout_s=0.2, count=5)
    assert int(got.batch.sample_id[0]) == 4
    assert "1 guides; this run's path has 2" in store.dead_letters()[0]["reason"]


def test_a_supervised_server_that_dies_comes_back_on_its_file_and_nothing_is_lost(tmp_path):
    with EmbeddedRedis(tmp_path / "r", password="pw") as server:
        server.supervise()
        store = RedisGuideStore(server.url, "sup")
        for k in range(3):
            store.put(make_batch(4 * k, run="sup"))
        os.kill(server.proc.pid, signal.SIGKILL)
        for k in range(3, 6):  # the client waits (with back-off) while the supervisor restarts the server
            store.put(make_batch(4 * k, run="sup"))
        seen = []
        while got := store.get("c", timeout_s=0.3, count=16):
            store.ack([d.id for d in got])
            seen += [int(i) for d in got for i in d.batch.sample_id]
        assert sorted(seen) == list(range(24)) and server.restarts == 1


def test_the_runs_embedded_server_has_a_private_password(tmp_path):
    with run_redis_url("pw", tmp_path / "redis") as url:
        password = (tmp_path / "redis" / PASSWORD_FILE).read_text()
        assert f":{password}@" in url and len(password) >= 32
        assert (tmp_path / "redis" / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
    with open_run_store("pw", tmp_path / "redis", must_exist=True) as store:  # what `store stats` opens
        assert store.stats()["produced"] == 0


def test_the_store_at_its_memory_limit_still_acknowledges_and_dead_letters(tmp_path):
    """Producers stop at max_backlog_bytes, well below the server's cap, so the writes that free memory
    (acknowledgements, dead letters) always have room."""
    with EmbeddedRedis(tmp_path / "r", max_memory_bytes=32 << 20) as server:
        store = RedisGuideStore(server.url, "full", max_backlog_bytes=12 << 20, put_timeout_s=0.3)
        store.put_raw(b"\x00" * 1000, 4, producer="junk", key="junk")
        with pytest.raises(BackpressureTimeout):
            for k in range(100):  # ~1.5 MB each: the bound is reached long before the cap
                store.put(make_batch(100 * k, n=100, shape=(3, 32, 32), run="full"))
        used = int(redis.Redis.from_url(server.url).info("memory")["used_memory"])
        assert used < 32 << 20
        got = store.get("c", timeout_s=0.3, count=100)
        assert got and store.ack([d.id for d in got]) == sum(len(d.batch) for d in got)
        assert store.dead_letters()[0]["producer"] == "junk"
        store.put(make_batch(10_000, n=100, shape=(3, 32, 32), run="full"))  # room again


def test_a_pool_that_shrank_takes_over_the_pending_records_of_its_missing_ranks(redis_server, run_name):
    """An elastic student pool of 3 ranks restarts with 2 after a host is lost: rank 2's consumer will not come
    back, so the entries pending under it go to rank 0 (2 % 2), which is handed them on its first read; ranks
    the pool still has keep theirs, and a pool that did not shrink moves nothing."""
    from student.guide_feed import consumer_name, take_over_consumers

    store = RedisGuideStore(redis_server.url, run_name)
    for k in range(6):
        store.put(make_batch(4 * k))
    names = [consumer_name(run_name, r) for r in range(3)]
    held = {name: store.get(name, timeout_s=1, count=2) for name in names}  # then the group is lost
    restarted = [RedisGuideStore(redis_server.url, run_name) for _ in range(2)]
    assert take_over_consumers(restarted[1], run_name, 1, 3) == 0  # the same world: each rank keeps its own
    assert take_over_consumers(restarted[1], run_name, 1, 2) == 0  # rank 2 goes to rank 0, not 1
    assert take_over_consumers(restarted[0], run_name, 0, 2) == 2
    back0 = restarted[0].get(names[0], timeout_s=0.2, count=10)
    back1 = restarted[1].get(names[1], timeout_s=0.2, count=10)
    assert sorted(d.id for d in back0) == sorted(d.id for d in held[names[0]] + held[names[2]])
    assert [d.id for d in back1] == [d.id for d in held[names[1]]]
    assert all(restarted[r].get(names[r], timeout_s=0.2) == [] and restarted[r].settled(names[r]) for r in range(2))
    assert restarted[0].ack([d.id for d in back0]) + restarted[1].ack([d.id for d in back1]) == 24
    s = store.stats()
    assert s["acknowledged"] == 24 and s["pending"] == 0 and balanced(s)
