"""The guide store on Redis Streams: one stream per run, one consumer group for the student pool.

Keys (hash-tagged by run, so a cluster keeps them on one slot)::

    bd:{RUN}:stream   entries {n, bytes, v, producer, key, payload}: one guide batch each
    bd:{RUN}:sizes    hash  entry id -> "n:bytes"         (what ack must subtract)
    bd:{RUN}:batches  set   batch keys already put        (a retried put is not a duplicate)
    bd:{RUN}:stats    hash  produced, acknowledged, dead_lettered, reclaimed (records), backlog_bytes
    bd:{RUN}:dead     stream of dead letters {entry, reason, producer, n, payload}

Delivery semantics (DESIGN.md 3.1): an entry is read by one consumer
(``XREADGROUP``), acknowledged after use (``ack``: ``XACK`` + ``XDEL``, so
memory is freed), reclaimed by another consumer when it stays pending longer
than ``claim_idle_s`` (``XAUTOCLAIM``), or, when it fails decoding or
validation, moved to the dead-letter stream with the reason. Every state
change is one Lua script, so counters never drift from the stream and a
retried call after a dropped connection does no harm. ``stats()`` lets
anyone check ``produced = acknowledged + pending + dead_lettered + undelivered``.
"""

from __future__ import annotations

import time
from typing import Iterable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from guide_store.codec import decode_batch, encode_batch
from guide_store.schema import SCHEMA_VERSION, GuideBatch, RecordError
from guide_store.source import Delivery

__all__ = ["RedisGuideStore", "Delivery", "BackpressureTimeout", "connect"]

_PUT = """
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[2], 'bytes', ARGV[3], 'v', ARGV[4],
                      'producer', ARGV[5], 'key', ARGV[1], 'payload', ARGV[6])
redis.call('HSET', KEYS[2], id, ARGV[2] .. ':' .. ARGV[3])
redis.call('HINCRBY', KEYS[4], 'produced', ARGV[2])
redis.call('HINCRBY', KEYS[4], 'backlog_bytes', ARGV[3])
return id
"""

# KEYS: stream, sizes, stats ; ARGV: group, id...
_ACK = """
local records, entries, freed = 0, 0, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    local s = redis.call('HGET', KEYS[2], id)
    if s then
      local sep = string.find(s, ':')
      records = records + tonumber(string.sub(s, 1, sep - 1))
      freed = freed + tonumber(string.sub(s, sep + 1))
      redis.call('HDEL', KEYS[2], id)
    end
    redis.call('XDEL', KEYS[1], id)
    entries = entries + 1
  end
end
redis.call('HINCRBY', KEYS[3], 'acknowledged', records)
redis.call('HINCRBY', KEYS[3], 'backlog_bytes', 0 - freed)
return {entries, records}
"""

# KEYS: stream, sizes, stats, dead ; ARGV: group, id, reason, producer, payload, maxlen
_DEAD = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local n, b = 0, 0
local s = redis.call('HGET', KEYS[2], ARGV[2])
if s then
  local sep = string.find(s, ':')
  n = tonumber(string.sub(s, 1, sep - 1))
  b = tonumber(string.sub(s, sep + 1))
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'entry', ARGV[2], 'reason', ARGV[3],
           'producer', ARGV[4], 'n', n, 'payload', ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', n)
redis.call('HINCRBY', KEYS[3], 'dead_entries', 1)
redis.call('HINCRBY', KEYS[3], 'backlog_bytes', 0 - b)
return 1
"""

# KEYS: stream, sizes, stats, dead ; ARGV: group
_STATS = """
local out = redis.call('HGETALL', KEYS[3])
local pending_records, pending_entries = 0, 0
local ok, rows = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 100000)
if ok then
  for _, row in ipairs(rows) do
    pending_entries = pending_entries + 1
    local s = redis.call('HGET', KEYS[2], row[1])
    if s then pending_records = pending_records + tonumber(string.sub(s, 1, string.find(s, ':') - 1)) end
  end
end
table.insert(out, 'pending') ; table.insert(out, pending_records)
table.insert(out, 'pending_entries') ; table.insert(out, pending_entries)
table.insert(out, 'stream_entries') ; table.insert(out, redis.call('XLEN', KEYS[1]))
table.insert(out, 'dead_stream_entries') ; table.insert(out, redis.call('XLEN', KEYS[4]))
return out
"""


class BackpressureTimeout(TimeoutError):
    """A producer waited too long for the backlog to fall below its bound."""


def connect(url: str, retries: int = 40, socket_timeout_s: float = 60.0) -> redis.Redis:
    """A client for ``redis://`` or ``rediss://`` URLs (password or ACL user in the URL) that retries with
    exponential backoff (about a minute in all) while the server is away, e.g. restarting."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    return redis.Redis.from_url(url, retry=retry, socket_timeout=socket_timeout_s, socket_connect_timeout=5,
                                health_check_interval=15)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisGuideStore:
    """Guide records of one run in a Redis stream, read by one consumer group."""

    def __init__(self, url: str, run: str, group: str = "students", *, dtype: str = "float32",
                 max_backlog_records: int = 100_000, max_backlog_bytes: int = 1 << 30,
                 claim_idle_s: float = 30.0, put_timeout_s: float = 300.0,
                 expect_shape: tuple[int, ...] | None = None, dead_letter_maxlen: int = 10_000):
        self.run, self.group, self.dtype = run, group, dtype
        self.max_backlog_records, self.max_backlog_bytes = max_backlog_records, max_backlog_bytes
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.put_timeout_s, self.expect_shape = put_timeout_s, expect_shape
        self.dead_letter_maxlen = dead_letter_maxlen
        self.client = connect(url)
        prefix = f"bd:{{{run}}}"
        self.stream, self.sizes, self.batches = f"{prefix}:stream", f"{prefix}:sizes", f"{prefix}:batches"
        self.stats_key, self.dead = f"{prefix}:stats", f"{prefix}:dead"
        self._put = self.client.register_script(_PUT)
        self._ack = self.client.register_script(_ACK)
        self._dead = self.client.register_script(_DEAD)
        self._stats = self.client.register_script(_STATS)
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    # -- producers -------------------------------------------------------------------------
    def put(self, batch: GuideBatch, key: str | None = None) -> str | None:
        """Append a batch; blocks while the backlog is over its bound (``BackpressureTimeout`` after
        ``put_timeout_s``). ``key`` (default: the batch's first sample id and size) makes a repeated put of
        the same block a no-op; returns the entry id, or ``None`` for such a repeat."""
        payload = encode_batch(batch, self.dtype)
        n, nbytes = len(batch), payload.size
        if key is None:
            key = f"{int(batch.sample_id[0])}+{n}" if n else "empty"
        self.wait_for_room(n, nbytes)
        entry = self._put(keys=[self.stream, self.sizes, self.batches, self.stats_key],
                          args=[key, n, nbytes, SCHEMA_VERSION, batch.producer, memoryview(payload)])
        return _s(entry) if entry else None

    def put_raw(self, payload: bytes, n: int, producer: str, key: str) -> str | None:
        """Append an already-encoded payload as it is (for tools and fault tests); same bookkeeping as ``put``."""
        self.wait_for_room(n, len(payload))
        entry = self._put(keys=[self.stream, self.sizes, self.batches, self.stats_key],
                          args=[key, n, len(payload), SCHEMA_VERSION, producer, payload])
        return _s(entry) if entry else None

    def wait_for_room(self, n: int, nbytes: int) -> None:
        """Block until ``n`` more records and ``nbytes`` more bytes fit under the backlog bounds."""
        deadline, sleep = time.monotonic() + self.put_timeout_s, 0.005
        while True:
            produced, acked, dead, backlog_bytes = (int(v or 0) for v in self.client.hmget(
                self.stats_key, "produced", "acknowledged", "dead_lettered", "backlog_bytes"))
            records = produced - acked - dead
            # an empty backlog always admits one batch, however large, so a big batch cannot deadlock
            if records == 0 or (records + n <= self.max_backlog_records
                                and backlog_bytes + nbytes <= self.max_backlog_bytes):
                return
            if time.monotonic() > deadline:
                raise BackpressureTimeout(
                    f"guide store for run {self.run!r}: backlog of {records} records / {backlog_bytes} bytes stayed "
                    f"above the bound ({self.max_backlog_records} records / {self.max_backlog_bytes} bytes) for "
                    f"{self.put_timeout_s:.0f}s; are the students consuming?")
            time.sleep(sleep)
            sleep = min(0.2, sleep * 1.5)

    # -- consumers -------------------------------------------------------------------------
    def get(self, consumer: str, timeout_s: float = 1.0, count: int = 1) -> list[Delivery]:
        """Up to ``count`` batches for ``consumer``: first entries reclaimed from consumers idle longer than
        ``claim_idle_s``, then new ones (waiting up to ``timeout_s``). Bad payloads are dead-lettered, never
        returned; a read that found only bad payloads reads on until the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            entries = self._read(consumer, max(0.001, deadline - time.monotonic()), count)
            out = []
            for (entry_id, fields), reclaimed in entries:
                entry_id = _s(entry_id)
                try:
                    out.append(Delivery(entry_id, self._decode(fields), reclaimed))
                except RecordError as err:
                    self._dead_letter(entry_id, fields, str(err))
            if any(d.reclaimed for d in out):
                self.client.hincrby(self.stats_key, "reclaimed", sum(len(d.batch) for d in out if d.reclaimed))
            if out or not entries or time.monotonic() >= deadline:
                return out

    def _read(self, consumer: str, timeout_s: float, count: int) -> list[tuple[tuple, bool]]:
        claimed = self.client.xautoclaim(self.stream, self.group, consumer, self.claim_idle_ms, "0-0", count=count)
        entries = [(e, True) for e in claimed[1] if e and e[1]]  # 6.2 may list deleted entries as nil
        if entries:
            return entries
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count,
                                       block=max(1, int(timeout_s * 1000)))
        return [(e, False) for _, items in (reply or []) for e in items]

    def _decode(self, fields: dict) -> GuideBatch:
        fields = {_s(k): v for k, v in fields.items()}
        if "payload" not in fields:
            raise RecordError("entry has no payload field")
        version = _s(fields.get("v", b"?"))
        if version != str(SCHEMA_VERSION):
            raise RecordError(f"schema version {version} is not supported (this reader knows {SCHEMA_VERSION})")
        batch = decode_batch(fields["payload"], self.expect_shape)
        if "n" in fields and int(fields["n"]) != len(batch):
            raise RecordError(f"entry says {int(fields['n'])} records, payload holds {len(batch)}")
        return batch

    def _dead_letter(self, entry_id: str, fields: dict, reason: str) -> None:
        fields = {_s(k): v for k, v in fields.items()}
        self._dead(keys=[self.stream, self.sizes, self.stats_key, self.dead],
                   args=[self.group, entry_id, reason, fields.get("producer", b""), fields.get("payload", b""),
                         self.dead_letter_maxlen])

    def ack(self, ids: Iterable[str]) -> int:
        """Acknowledge and delete entries; returns how many records this call acknowledged (an id already
        acknowledged, by this or another consumer, counts zero)."""
        ids = list(ids)
        if not ids:
            return 0
        _, records = self._ack(keys=[self.stream, self.sizes, self.stats_key], args=[self.group, *ids])
        return int(records)

    # -- inspection ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Record counts: produced, acknowledged, pending, dead_lettered, undelivered, backlog (records and
        bytes), reclaimed; entry counts: pending_entries, stream_entries, dead_entries."""
        flat = self._stats(keys=[self.stream, self.sizes, self.stats_key, self.dead], args=[self.group])
        raw = {_s(k): int(v) for k, v in zip(flat[::2], flat[1::2])}
        out = {k: raw.get(k, 0) for k in ("produced", "acknowledged", "dead_lettered", "reclaimed", "pending",
                                           "pending_entries", "stream_entries", "dead_entries", "backlog_bytes")}
        out["backlog"] = out["produced"] - out["acknowledged"] - out["dead_lettered"]
        out["undelivered"] = out["backlog"] - out["pending"]
        out["delivered"] = out["acknowledged"] + out["dead_lettered"] + out["pending"]
        return out

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead letters: ``{"entry", "reason", "producer", "n"}`` (payload left out)."""
        rows = self.client.xrevrange(self.dead, count=count)
        return [{"id": _s(i), **{_s(k): _s(v) for k, v in f.items() if _s(k) != "payload"}} for i, f in rows]

    def entries(self, start: str = "-", count: int = 64):
        """Iterate ``(entry_id, fields)`` over the stream without consuming (for export)."""
        cursor = start
        while True:
            rows = self.client.xrange(self.stream, min=cursor, max="+", count=count)
            if cursor != "-" and rows and _s(rows[0][0]) == cursor:
                rows = rows[1:]
            if not rows:
                return
            for entry_id, fields in rows:
                yield _s(entry_id), {_s(k): v for k, v in fields.items()}
            cursor = _s(rows[-1][0])

    def delete_run(self) -> None:
        """Remove every key of this run."""
        self.client.delete(self.stream, self.sizes, self.batches, self.stats_key, self.dead)

    def close(self) -> None:
        self.client.close()
