"""Contract every guide backend passes unchanged: the live Redis stream and a Parquet directory."""

import pytest

from guide_store.codec import encode_record_batch
from guide_store.parquet import ParquetGuideSink, ParquetGuideSource, export_store
from guide_store.redis_store import RedisGuideStore
from guide_store.schema import META_VERSION, to_record_batch

from guide_factory import assert_same, make_batch


class RedisBackend:
    def __init__(self, server, run, tmp_path):
        self.store = RedisGuideStore(server.url, run, claim_idle_s=60)

    def writer(self):
        return self.store

    def put_record_batch(self, rb):
        return self.store.put_raw(encode_record_batch(rb).to_pybytes(), rb.num_rows, "raw", key=f"raw{id(rb)}")

    def reader(self):
        return self.store

    def read_all(self):
        out = []
        while True:
            got = self.store.get("reader", timeout_s=0.2, count=8)
            if not got:
                return out
            self.store.ack([d.id for d in got])
            out += got


class ParquetBackend:
    def __init__(self, server, run, tmp_path):
        self.dir = tmp_path / "guides"
        self.sink = ParquetGuideSink(self.dir)

    def writer(self):
        return self.sink

    def put_record_batch(self, rb):
        self.sink.put_record_batch(rb)

    def read_all(self):
        self.sink.close()
        src = ParquetGuideSource(self.dir)
        self.source = src
        return src.get(count=10_000)


@pytest.fixture(params=[RedisBackend, ParquetBackend], ids=["redis", "parquet"])
def backend(request, redis_server, run_name, tmp_path):
    return request.param(redis_server, run_name, tmp_path)


def test_round_trip_every_field(backend):
    batches = [make_batch(0, guides=2), make_batch(4, guides=2), make_batch(8, n=3, guides=2)]
    for b in batches:
        backend.writer().put(b)
    got = backend.read_all()
    assert len(got) == 3
    for d, b in zip(got, batches):
        assert_same(d.batch, b)


def test_order_per_producer(backend):
    for k in range(6):
        backend.writer().put(make_batch(10 * k, producer=f"p{k % 2}"))
    got = backend.read_all()
    for producer in ("p0", "p1"):
        firsts = [int(d.batch.sample_id[0]) for d in got if d.batch.producer == producer]
        assert firsts == sorted(firsts) and len(firsts) == 3


def test_unknown_schema_version_is_refused(backend):
    rb = to_record_batch(make_batch(0))
    meta = dict(rb.schema.metadata)
    meta[META_VERSION] = b"2"
    backend.put_record_batch(rb.replace_schema_metadata(meta))
    backend.writer().put(make_batch(100))
    got = backend.read_all()
    assert [int(d.batch.sample_id[0]) for d in got] == [100]  # the bad one never reaches a student


def test_export_then_read_parquet_equals_stream(redis_server, run_name, tmp_path):
    store = RedisGuideStore(redis_server.url, run_name)
    batches = [make_batch(0), make_batch(4, guides=1), make_batch(8, guides=1)]
    for b in batches:
        store.put(b)
    store.put_raw(b"not arrow", 2, "bad", key="bad")
    summary = export_store(store, tmp_path / "out")
    assert summary["records"] == 12 and len(summary["skipped"]) == 1
    got = ParquetGuideSource(tmp_path / "out").get(count=10)
    for d, b in zip(got, batches):
        assert_same(d.batch, b)
    # the files open without this package
    import pandas as pd

    frames = [pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet"))]
    assert sum(len(f) for f in frames) == 12 and "x0" in frames[0].columns
    whole = pd.read_parquet(tmp_path / "out")  # the directory as a dataset, as a user would open it
    assert len(whole) == 12 and sorted(whole.sample_id) == list(range(12))


def test_parquet_shards_by_rank(tmp_path):
    with ParquetGuideSink(tmp_path) as sink:
        for k in range(7):
            sink.put(make_batch(10 * k))
    seen = []
    for rank in range(3):
        seen += [int(d.batch.sample_id[0]) for d in ParquetGuideSource(tmp_path, rank, 3).get(count=100)]
    assert sorted(seen) == [10 * k for k in range(7)]
