"""The guide store on Redis Streams: one stream per run, one consumer group for the student pool.

Keys (hash-tagged by run, so a cluster keeps them on one slot)::

    bd:{RUN}:stream     entries {n, bytes, v, producer, key, payload}: one guide batch each
    bd:{RUN}:sizes      hash  entry id -> "n:bytes" of a delivered entry (lets stats count pending records)
    bd:{RUN}:put:KEY    guard: the batch KEY was put       (a retried put is not a duplicate)
    bd:{RUN}:stats      hash  produced, acknowledged, dead_lettered, reclaimed (records), backlog_bytes
    bd:{RUN}:dead       stream of dead letters {entry, reason, producer, n, key, ids, payload}

    bd:{RUN}:ids        hash  sample id -> the entry that first delivered it (a repeat is dead-lettered)

Delivery semantics: an entry is read by one consumer
(``XREADGROUP``) and acknowledged when the consumer can no longer lose it
(``ack``: ``XACK`` + ``XDEL``, so memory is freed). Until then it stays pending
under that consumer's name: a consumer that comes back under the same name (a
restarted student rank) is handed its own pending entries first; with
``claim_idle_s`` set, entries pending longer than that are also reclaimed by
other consumers (``XAUTOCLAIM``, for consumers that never come back). An entry
that fails decoding or validation, belongs to another run, or repeats sample
ids already delivered is moved to the dead-letter stream with the reason (and
at most ``DEAD_PAYLOAD_BYTES`` of its payload), so poison never blocks a reader.

Counters come from the store's own accounting, never from fields inside an
entry: a delivery records the entry's records and bytes (as its consumer
verified them by decoding) in ``sizes``, in the same script that counts it
handed out, and acks and dead letters read them from there. Every state change
is atomic (a MULTI/EXEC transaction for puts, whose payload must not be copied
through Lua; a Lua script for acks, deliveries and dead letters), and a retried
call after a dropped connection does no harm: a put is guarded by its batch key,
an ack by XACK's own answer, and a read whose reply was lost (its entries
pending under the consumer, never handed to it) is found by ``orphans`` and
handed out again. These counters are the store's view; whether every planned
record was trained is decided elsewhere, from ids (the run's ledger), never
from them.

Test-only: ``BEZIER_DISTILL_TEST_DROP_BLOCK=K`` in a producer's environment makes
the put of block K (key ``block-K``) count it produced and then discard it, so
no consumer can ever read it: the run's ledger must then name block K as lost.
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterable, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import Encoder, PythonRespSerializer  # type: ignore[attr-defined]  # missing from types-redis 4.x, which shadows redis 8's own types where installed
from redis.retry import Retry

from guide_store.errors import StoreError
from guide_store.codec import decode_batch, encode_batch
from guide_store.schema import SCHEMA_VERSION, GuideBatch, RecordError
from guide_store.source import Delivery

__all__ = [
    "RedisGuideStore",
    "Delivery",
    "BackpressureTimeout",
    "connect",
    "DEAD_PAYLOAD_BYTES",
    "DROP_BLOCK_ENV",
    "id_runs",
]

# test-only (module docstring): the put of this block is counted and discarded
DROP_BLOCK_ENV = "BEZIER_DISTILL_TEST_DROP_BLOCK"


def id_runs(ids) -> list[list[int]]:
    """Sorted sample ids as ``[[start, count], ...]`` runs of consecutive values (how ids travel and are kept;
    an id given twice starts a run of its own)."""
    runs: list[list[int]] = []
    for i in sorted(int(i) for i in ids):
        if runs and i == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


# a dead letter keeps this much of its entry's payload (enough to see what it was), so the dead-letter
# stream's size is bounded: at most dead_letter_maxlen entries of this many bytes plus their reasons
DEAD_PAYLOAD_BYTES = 4096

# the records and bytes recorded for an entry when it was first delivered; an entry never delivered has
# none, and the caller passes what it knows instead (``verified``: the counts an acknowledging consumer
# decoded, or a dead letter's own fields; 0, 0 when nobody knows)
_SIZE = """
local function size(sizes, id, verified)
  local s = redis.call('HGET', sizes, id)
  if not s then s = verified end
  if not s or s == '' then return 0, 0 end
  local sep = string.find(s, ':')
  return tonumber(string.sub(s, 1, sep - 1)), tonumber(string.sub(s, sep + 1))
end
"""

# KEYS: stream, sizes, stats ; ARGV: group, then (entry id, verified "n:bytes" or "") pairs
_ACK = (
    _SIZE
    + """
local records, entries, freed = 0, 0, 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    local n, b = size(KEYS[2], id, ARGV[i + 1])
    records = records + n
    freed = freed + b
    redis.call('HDEL', KEYS[2], id)
    redis.call('XDEL', KEYS[1], id)
    entries = entries + 1
  end
end
redis.call('HINCRBY', KEYS[3], 'acknowledged', records)
redis.call('HINCRBY', KEYS[3], 'backlog_bytes', 0 - freed)
return {entries, records}
"""
)

# KEYS: stream, sizes, stats, dead, the put guard its key field names ; ARGV: group, id, reason, producer,
# payload prefix, maxlen, payload bytes, its fields' "n:bytes", its put key, its sample ids (JSON runs, or "").
# Those fields count only for an entry a put wrote (its guard exists) and was never delivered.
_DEAD = (
    _SIZE
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local claimed = nil
if redis.call('EXISTS', KEYS[5]) == 1 then claimed = ARGV[8] end
local n, b = size(KEYS[2], ARGV[2], claimed)
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'entry', ARGV[2], 'reason', ARGV[3],
           'producer', ARGV[4], 'n', n, 'key', ARGV[9], 'ids', ARGV[10], 'payload_bytes', ARGV[7],
           'payload_prefix', ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', n)
redis.call('HINCRBY', KEYS[3], 'dead_entries', 1)
redis.call('HINCRBY', KEYS[3], 'backlog_bytes', 0 - b)
return 1
"""
)

# KEYS: ids, stats, sizes ; ARGV: entry id, verified "n:bytes", then the sample ids.
# Claims each sample id for this entry; returns the entry that already owns one of them, or "" when none
# does. Then the claims stand and, on the entry's first delivery (no size recorded for it yet), its size is
# recorded and its records counted handed out: one script, so no moment leaves an entry delivered without
# its size (a size written by the producer after its put, as before, was missing when the producer died
# between the two, and the entry then looked undelivered for ever).
_DELIVER = """
for i = 3, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if owner and owner ~= ARGV[1] then return owner end
end
for i = 3, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) == 1 then
  local sep = string.find(ARGV[2], ':')
  redis.call('HINCRBY', KEYS[2], 'handed_out', tonumber(string.sub(ARGV[2], 1, sep - 1)))
end
return ''
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


class BackpressureTimeout(StoreError, TimeoutError):
    """A producer waited too long for the backlog to fall below its bound."""


class _ReconnectRetry(Retry):
    """Retries while the server is away, but not on refused credentials (redis-py derives those from
    ConnectionError too): a wrong password fails at once instead of after a minute of backoff."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(error: Exception) -> bool:
            if isinstance(error, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
                return False
            return is_retryable(error) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)  # type: ignore[call-arg]  # types-redis 4.x, where installed, predates with_failure_count


def connect(url: str, retries: int = 40, socket_timeout_s: float = 60.0) -> redis.Redis:
    """A client for ``redis://`` or ``rediss://`` URLs (password or ACL user in the URL) that retries with
    exponential backoff (about a minute in all) while the server is away, e.g. restarting.

    Commands are packed by redis-py's Python serializer, which sends large values (guide payloads) as
    their own chunks without copying them; hiredis' packer, the default when hiredis is installed, copies
    them and measured ~9 ms per 4 MB here. Replies are still parsed by hiredis when it is installed.
    """
    retry = _ReconnectRetry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    packer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    pool = redis.ConnectionPool.from_url(
        url,
        retry=retry,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=15,
        command_packer=packer,
    )
    return redis.Redis(connection_pool=pool)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# redis-py types a reply as whatever any protocol and decoding could give; this module's client speaks RESP2 and
# keeps bytes, so its stream replies have these shapes (fields None: an entry deleted while pending, on 6.2)
_Entry = tuple[bytes, dict[bytes, bytes] | None]
_Stored = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE/XREVRANGE: entries the stream holds
_StreamsReply = list[tuple[bytes, list[_Entry]]] | None  # XREADGROUP: (stream, entries) per stream; None: nothing


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisGuideStore:
    """Guide records of one run in a Redis stream, read by one consumer group."""

    def __init__(
        self,
        url: str,
        run: str,
        group: str = "students",
        *,
        dtype: str = "float32",
        max_backlog_records: int = 100_000,
        max_backlog_bytes: int = 1 << 30,
        claim_idle_s: float | None = None,
        put_timeout_s: float = 300.0,
        expect_shape: tuple[int, ...] | None = None,
        dead_letter_maxlen: int = 10_000,
        expect_guides: int | None = None,
    ):
        """``claim_idle_s``: also reclaim entries another consumer has held that long (``None``: entries wait
        for their own consumer to come back under its name). ``expect_shape``/``expect_guides``: a reader's
        record shape and guide count; batches of another layout are dead-lettered."""
        self.run, self.group, self.dtype = run, group, dtype
        self.max_backlog_records, self.max_backlog_bytes = max_backlog_records, max_backlog_bytes
        self.claim_idle_ms = int(claim_idle_s * 1000) if claim_idle_s else None
        self.put_timeout_s, self.expect_shape, self.expect_guides = put_timeout_s, expect_shape, expect_guides
        self.dead_letter_maxlen = dead_letter_maxlen
        self.client = connect(url)
        prefix = f"bd:{{{run}}}"
        self.prefix, self.stream, self.sizes = prefix, f"{prefix}:stream", f"{prefix}:sizes"
        self.stats_key, self.dead, self.ids = f"{prefix}:stats", f"{prefix}:dead", f"{prefix}:ids"
        self._backlog: tuple[int, int] | None = None  # (records, bytes) as of this producer's last put
        self._recovering: dict[str, str] = {}  # consumer -> last own pending entry handed back to it
        self._recovered: set[str] = set()  # consumers whose own pending entries were all handed back
        self._verified: dict[str, str] = {}  # entry id -> "n:bytes" from decoding it, until it is acknowledged
        self._held: set[str] = set()  # entries handed to this object's consumers and not acknowledged since
        self._last_orphan_check = float("-inf")
        self._last_claim = float("-inf")
        self._ack = self.client.register_script(_ACK)
        self._dead = self.client.register_script(_DEAD)
        self._deliver = self.client.register_script(_DELIVER)
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
        the same block a no-op; returns the entry id, or ``None`` for such a repeat. The bound holds to
        within one batch per producer (a producer re-reads the backlog only when near the bound)."""
        payload = encode_batch(batch, self.dtype)
        n = len(batch)
        if key is None:
            key = f"{int(batch.sample_id[0])}+{n}" if n else "empty"
        return self._append(memoryview(payload), n, batch.producer, key)

    def put_raw(self, payload: bytes, n: int, producer: str, key: str) -> str | None:
        """Append an already-encoded payload as it is (for tools and fault tests); same bookkeeping as ``put``."""
        return self._append(payload, n, producer, key)

    def _append(self, payload, n: int, producer: str, key: str) -> str | None:
        nbytes = len(payload)
        self.wait_for_room(n, nbytes)
        guard = f"{self.prefix}:put:{key}"
        fields = {"n": n, "bytes": nbytes, "v": SCHEMA_VERSION, "producer": producer, "key": key, "payload": payload}
        deadline, pause = time.monotonic() + self.put_timeout_s, 0.05
        while True:
            try:
                result = self._transaction(guard, fields, n, nbytes)
                break
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError):
                raise
            except (redis.WatchError, redis.ConnectionError, redis.TimeoutError):
                # The guard and the entry are written by one transaction, so "guard exists" means "the batch
                # is in" (put by us before the connection dropped, or by another producer): never a loss.
                # A WatchError is also what redis-py raises when the connection drops while watching.
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(2.0, pause * 2)
        # None: in already (an earlier attempt whose reply was lost, or another producer); a size never recorded
        # is made up for by the counts its consumer verifies
        if result is None:
            return None
        entry, produced, backlog_bytes, handed_out, dead = result
        self._backlog = (produced - int(handed_out or 0) - int(dead or 0), backlog_bytes)
        return None if entry is None else _s(entry)  # None: discarded by the test-only drop

    def _transaction(self, guard: str, fields: dict, n: int, nbytes: int):
        """WATCH the guard; if unset, atomically set it, append the entry and count it. ``None``: already in.
        The test-only drop (module docstring) counts its block and appends nothing: no reader can see it."""
        dropped = (
            os.environ.get(DROP_BLOCK_ENV) not in (None, "") and fields["key"] == f"block-{os.environ[DROP_BLOCK_ENV]}"
        )
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(guard)
            if pipe.exists(guard):
                return None
            pipe.multi()
            pipe.set(guard, 1)
            if not dropped:
                pipe.xadd(self.stream, fields)
            pipe.hincrby(self.stats_key, "produced", n)
            pipe.hincrby(self.stats_key, "backlog_bytes", 0 if dropped else nbytes)
            pipe.hmget(self.stats_key, "handed_out", "dead_lettered")
            out = pipe.execute()
            entry = None if dropped else out[1]
            produced, backlog_bytes, (handed_out, dead) = out[-3:]
            return entry, produced, backlog_bytes, handed_out, dead

    def wait_for_room(self, n: int, nbytes: int) -> None:
        """Block until ``n`` more records and ``nbytes`` more bytes fit under the backlog bounds. The record
        bound counts what no consumer has been handed yet: records a consumer holds until its next
        checkpoint are its own to bound, and counting them here could stall a consumer that must read
        more before it can checkpoint."""
        if self._backlog is not None:
            records, backlog_bytes = self._backlog
            if records + 2 * n <= self.max_backlog_records and backlog_bytes + 2 * nbytes <= self.max_backlog_bytes:
                return  # clearly under the bound as of the last put: no round trip
        deadline, sleep = time.monotonic() + self.put_timeout_s, 0.005
        while True:
            produced, handed_out, dead, backlog_bytes = (
                int(v or 0)
                for v in self.client.hmget(self.stats_key, "produced", "handed_out", "dead_lettered", "backlog_bytes")
            )
            records = produced - handed_out - dead  # a dead-lettered entry is never handed out
            # an empty backlog always admits one batch, however large, so a big batch cannot deadlock
            if records == 0 or (
                records + n <= self.max_backlog_records and backlog_bytes + nbytes <= self.max_backlog_bytes
            ):
                return
            if time.monotonic() > deadline:
                raise BackpressureTimeout(
                    f"guide store for run {self.run!r}: {records} undelivered records / {backlog_bytes} bytes stayed "
                    f"above the bound ({self.max_backlog_records} records / {self.max_backlog_bytes} bytes) for "
                    f"{self.put_timeout_s:.0f}s; are the students consuming?"
                )
            time.sleep(sleep)
            sleep = min(0.2, sleep * 1.5)

    # -- consumers -------------------------------------------------------------------------
    def get(self, consumer: str, timeout_s: float = 1.0, count: int = 1) -> list[Delivery]:
        """Up to ``count`` batches for ``consumer``: first its own entries still pending from an earlier life
        (a restarted rank under the same name), then, with ``claim_idle_s``, entries other consumers have
        held that long, then new ones (waiting up to ``timeout_s``). Poison (see the module docstring) is
        dead-lettered, never returned; a read that found only poison reads on until the timeout.
        ``timeout_s <= 0`` does not block (a blocking read's short timeout is rounded up to Redis's timer
        tick, ~100 ms)."""
        deadline = time.monotonic() + timeout_s
        while True:
            entries = self._read(consumer, max(0.0, deadline - time.monotonic()), count)
            out = []
            for (entry_id, fields), reclaimed in entries:
                entry_id = _s(entry_id)
                batch = None
                try:
                    batch = self._decode(fields)
                    verified = f"{len(batch)}:{len(fields[b'payload'])}"  # the payload's own count, checked
                    owner = _s(
                        self._deliver(
                            keys=[self.ids, self.stats_key, self.sizes],
                            args=[entry_id, verified, *batch.sample_id.tolist()],
                        )
                    )
                    if owner:
                        raise RecordError(f"sample ids already delivered in entry {owner}")
                except RecordError as err:
                    self._dead_letter(entry_id, fields, str(err), None if batch is None else batch.sample_id.tolist())
                    continue
                self._verified[entry_id] = verified
                self._held.add(entry_id)
                out.append(Delivery(entry_id, batch, reclaimed))
            if any(d.reclaimed for d in out):
                self.client.hincrby(self.stats_key, "reclaimed", sum(len(d.batch) for d in out if d.reclaimed))
            if out or not entries or time.monotonic() >= deadline:
                return out

    def _read(self, consumer: str, timeout_s: float, count: int) -> list[tuple[tuple, bool]]:
        """``((id, fields), reclaimed)`` rows for ``consumer``."""
        while consumer not in self._recovered:  # its own pending entries, from before it (re)started
            cursor = self._recovering.get(consumer, "0")
            reply = cast(
                _StreamsReply, self.client.xreadgroup(self.group, consumer, {self.stream: cursor}, count=count)
            )
            own = [e for _, items in (reply or []) for e in items]
            if not own:
                self._recovered.add(consumer)
                break
            self._recovering[consumer] = _s(own[-1][0])
            for entry_id, fields in own:
                if not fields:  # deleted while pending (6.2 lists it without fields): nothing left to hand out
                    self.client.xack(self.stream, self.group, entry_id)
            own = [e for e in own if e[1]]
            if own:
                return [(e, True) for e in own]
        # nothing can become claimable faster than claim_idle_s, so look a few times per idle period only
        if self.claim_idle_ms is not None and time.monotonic() - self._last_claim >= self.claim_idle_ms / 4000:
            self._last_claim = time.monotonic()
            claimed = cast(
                tuple[bytes, list[_Entry], list[bytes]],
                self.client.xautoclaim(self.stream, self.group, consumer, self.claim_idle_ms, "0-0", count=count),
            )
            entries = [(e, True) for e in claimed[1] if e and e[1]]  # 6.2 may list deleted ones as nil
            if entries:
                return entries
        block = int(timeout_s * 1000) if timeout_s > 0 else None
        reply = cast(
            _StreamsReply,
            self.client.xreadgroup(
                self.group,
                consumer,
                {self.stream: ">"},
                count=count,
                block=max(1, block) if block is not None else None,
            ),
        )
        rows = [(e, False) for _, items in (reply or []) for e in items]
        if not rows and time.monotonic() - self._last_orphan_check >= 1.0:
            self._last_orphan_check = time.monotonic()
            rows = self._orphan_entries(consumer, count)
        return rows

    def orphans(self, consumer: str) -> list[str]:
        """Entries pending under ``consumer`` that this object never handed to it: the entries of a read whose
        reply was lost (redis-py retried it and the retry read on), or of an earlier life not yet handed back.
        Left alone they would stay pending for good while every count said the stream was drained."""
        held = set(self._held)
        rows = self.client.xpending_range(
            self.stream, self.group, min="-", max="+", count=100_000, consumername=consumer
        )
        return [i for i in (_s(r["message_id"]) for r in rows) if i not in held]

    def _orphan_entries(self, consumer: str, count: int) -> list[tuple[tuple, bool]]:
        out = []
        for entry_id in self.orphans(consumer)[:count]:
            rows = self.client.xrange(self.stream, min=entry_id, max=entry_id, count=1)
            if rows and rows[0][1]:
                out.append((rows[0], True))
            else:  # deleted while pending: nothing left to hand out
                self.client.xack(self.stream, self.group, entry_id)
        return out

    def pending_by_consumer(self) -> dict[str, int]:
        """Each consumer of the group with the number of entries pending under it."""
        try:
            rows = self.client.xinfo_consumers(self.stream, self.group)
        except redis.ResponseError:  # no stream or group yet
            return {}
        return {_s(r["name"]): int(r["pending"]) for r in rows}

    def move_pending(self, from_consumer: str, to_consumer: str) -> int:
        """Every entry pending under ``from_consumer`` (a consumer that will not come back) made pending under
        ``to_consumer`` (``XCLAIM``), which is handed them as its own on its first read; returns how many."""
        rows = self.client.xpending_range(
            self.stream, self.group, min="-", max="+", count=100_000, consumername=from_consumer
        )
        ids = [r["message_id"] for r in rows]
        if ids:
            self.client.xclaim(self.stream, self.group, to_consumer, 0, ids, justid=True)  # type: ignore[arg-type]  # redis-py asks a list of its own key type (invariant) where any sequence of ids does
        return len(ids)

    def settled(self, consumer: str) -> bool:
        """Whether ``consumer`` holds nothing this object has not handed to it: its pending entries of an earlier
        life were handed back and no read's reply was lost. A rank may call itself done only then."""
        return consumer in self._recovered and not self.orphans(consumer)

    def _decode(self, fields: dict) -> GuideBatch:
        """The entry's batch, or ``RecordError`` with the reason for anything that is not a guide batch of this
        run (whatever the fields hold: this never raises anything else)."""
        try:
            fields = {_s(k): v for k, v in fields.items()}
            if "payload" not in fields:
                raise RecordError("entry has no payload field")
            if not {"n", "bytes"} <= fields.keys():
                raise RecordError("entry has no n/bytes fields (not written by a guide store)")
            version = _s(fields.get("v", b"?"))
            if version != str(SCHEMA_VERSION):
                raise RecordError(f"schema version {version} is not supported (this reader knows {SCHEMA_VERSION})")
            n = _int_or_none(fields["n"])
            if n is None:
                raise RecordError(f"entry's n field {fields['n'][:40]!r} is not a record count")
            batch = decode_batch(fields["payload"], self.expect_shape)
            if n != len(batch):
                raise RecordError(f"entry says {n} records, payload holds {len(batch)}")
            if self.expect_guides is not None and len(batch.guides) != self.expect_guides:
                raise RecordError(f"the batch has {len(batch.guides)} guides; this run's path has {self.expect_guides}")
            if batch.run != self.run:
                raise RecordError(f"the batch belongs to run {batch.run!r}, not {self.run!r}")
            return batch
        except RecordError:
            raise
        except Exception as err:  # a malformed entry must be dead-lettered, whatever broke reading it
            raise RecordError(f"malformed entry: {type(err).__name__}: {err}"[:500]) from None

    def _dead_letter(self, entry_id: str, fields: dict, reason: str, sample_ids: list[int] | None = None) -> None:
        """Move an entry to the dead-letter stream with ``reason``, its put key and (when it could be decoded)
        its sample ids, so the run's ledger can tell which planned records went there."""
        fields = {_s(k): v for k, v in fields.items()}
        payload = fields.get("payload", b"")
        payload = payload if isinstance(payload, bytes) else str(payload).encode()
        n, nbytes = (_int_or_none(fields.get(f)) for f in ("n", "bytes"))
        claimed = f"{n}:{nbytes}" if n is not None and nbytes is not None else ""
        guard = f"{self.prefix}:put:{_s(fields.get('key', b''))}" if fields.get("key") else f"{self.prefix}:put:-"
        key = _s(fields.get("key", b""))[:200]
        ids = json.dumps(id_runs(sample_ids)) if sample_ids is not None else ""
        self._dead(
            keys=[self.stream, self.sizes, self.stats_key, self.dead, guard],
            args=[
                self.group,
                entry_id,
                reason,
                fields.get("producer", b""),
                payload[:DEAD_PAYLOAD_BYTES],
                self.dead_letter_maxlen,
                len(payload),
                claimed,
                key,
                ids,
            ],
        )

    def ack(self, ids: Iterable[str]) -> int:
        """Acknowledge and delete entries; returns how many records this call acknowledged (an id already
        acknowledged, by this or another consumer, counts zero)."""
        ids = list(ids)
        if not ids:
            return 0
        args = [self.group]
        for entry_id in ids:
            args += [entry_id, self._verified.pop(entry_id, "")]
            self._held.discard(entry_id)
        _, records = self._ack(keys=[self.stream, self.sizes, self.stats_key], args=args)
        return int(records)

    # -- inspection ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Record counts: produced, acknowledged, pending, dead_lettered, undelivered, backlog (records and
        bytes), reclaimed; entry counts: pending_entries, stream_entries, dead_entries."""
        flat = self._stats(keys=[self.stream, self.sizes, self.stats_key, self.dead], args=[self.group])
        raw = {_s(k): int(v) for k, v in zip(flat[::2], flat[1::2])}
        out = {
            k: raw.get(k, 0)
            for k in (
                "produced",
                "acknowledged",
                "dead_lettered",
                "reclaimed",
                "pending",
                "pending_entries",
                "stream_entries",
                "dead_entries",
                "backlog_bytes",
                "handed_out",
            )
        }
        out["backlog"] = out["produced"] - out["acknowledged"] - out["dead_lettered"]
        out["undelivered"] = out["backlog"] - out["pending"]
        # from the stream itself, not the counters: entries in it that no consumer was handed (acks and dead
        # letters delete theirs); what tells a reader whether more can come
        out["undelivered_entries"] = max(0, out["stream_entries"] - out["pending_entries"])
        out["delivered"] = out["acknowledged"] + out["dead_lettered"] + out["pending"]
        return out

    def pending_sample_ids(self) -> list[int]:
        """Sample ids of every entry pending in the group (any consumer), read from the entries themselves."""
        out: list[int] = []
        rows = self.client.xpending_range(self.stream, self.group, min="-", max="+", count=1_000_000)
        for entry_id in (_s(r["message_id"]) for r in rows):
            for _, fields in cast(_Stored, self.client.xrange(self.stream, min=entry_id, max=entry_id, count=1)):
                try:
                    out += decode_batch(fields[b"payload"]).sample_id.tolist()
                except Exception:  # noqa: BLE001 - not a batch (poison not yet dead-lettered): no ids to name
                    continue
        return out

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead letters: ``{"entry", "reason", "producer", "n", "payload_bytes"}`` (the payload's
        kept prefix left out)."""
        rows = cast(_Stored, self.client.xrevrange(self.dead, count=count))
        return [{"id": _s(i), **{_s(k): _s(v) for k, v in f.items() if _s(k) != "payload_prefix"}} for i, f in rows]

    def entries(self, start: str = "-", count: int = 64):
        """Iterate ``(entry_id, fields)`` over the stream without consuming (for export)."""
        cursor = start
        while True:
            rows = cast(_Stored, self.client.xrange(self.stream, min=cursor, max="+", count=count))
            if cursor != "-" and rows and _s(rows[0][0]) == cursor:
                rows = rows[1:]
            if not rows:
                return
            for entry_id, fields in rows:
                yield _s(entry_id), {_s(k): v for k, v in fields.items()}
            cursor = _s(rows[-1][0])

    def delete_run(self) -> None:
        """Remove every key of this run."""
        guards = list(self.client.scan_iter(match=f"{self.prefix}:put:*", count=1000))
        self.client.delete(self.stream, self.sizes, self.stats_key, self.dead, self.ids, *guards)

    def close(self) -> None:
        self.client.close()
