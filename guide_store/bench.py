"""``bezier-distill store bench``: the store's full path against raw Redis streams, same server, same sizes.

(a) raw: XADD of opaque bytes, XREADGROUP, XACK (+ XDEL, which the store also does, so memory stays flat);
(b) store: a torch ``GuideBatch`` in (encode + put with bookkeeping) to torch tensors out (get + decode +
validate) and ack. Rounds alternate between (a) and (b) so drift hits both: each round is a raw/store pair (at
least ``min_pairs``, 5 by default, however short ``seconds_per_size``), its ratio raw time / store time. The
MB/s figures are the median round's; ``ratio`` is the median of the per-pair ratios, with the 90% interval of
``median_interval`` (distribution-free, from the order statistics); the pairs' times are in the JSON rows.

``median_interval`` is also the pipeline bench's (``cluster.pipeline_bench``): this is the lowest layer both
import from.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from guide_store.codec import encode_batch
from guide_store.embedded import EmbeddedRedis
from guide_store.open_store import open_store
from guide_store.redis_store import RedisGuideStore, connect
from guide_store.schema import GuideBatch

log = logging.getLogger(__name__)

__all__ = ["make_batch", "run_bench", "median_interval", "INTERVAL_LEVEL"]

RECORD_SHAPE = (3, 32, 32)  # 12 KiB per float32 tensor, 4 tensors (x0, x1, g1, g2) per record
INTERVAL_LEVEL = 0.9  # of every ratio's interval for its median


def median_interval(values: list[float], level: float = INTERVAL_LEVEL) -> dict:
    """The median of ``values`` (per-pair ratios) and a distribution-free interval for it from their order
    statistics: ``[x_(j), x_(n+1-j)]`` (sorted, 1-based) holds the true median with probability
    ``P(j <= B <= n - j)``, ``B ~ Binomial(n, 1/2)``, whatever the ratios' distribution, if the pairs are
    independent draws of it; ``j`` is the largest whose coverage is at least ``level``. Too few values for
    ``level`` (under 5 at 90%: the whole range of 5 covers 0.9375, of 4 only 0.875) give the whole range and
    its smaller coverage, which is returned with it (one value: ``[r, r]``, coverage 0)."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        raise ValueError("the median of no values")
    coverage = lambda j: sum(math.comb(n, i) for i in range(j, n - j + 1)) / 2**n
    j = max((j for j in range(1, (n + 1) // 2 + 1) if coverage(j) >= level), default=1)
    return {"median": statistics.median(xs), "interval": [xs[j - 1], xs[n - j]], "coverage": round(coverage(j), 4)}


def make_batch(megabytes: float, first_id: int = 0, seed: int = 0, run: str = "bench") -> GuideBatch:
    """A cubic-path guide batch of about ``megabytes`` MB (float32)."""
    per_record = 4 * 4 * torch.Size(RECORD_SHAPE).numel()
    n = max(1, int(megabytes * 1e6 / per_record))
    g = torch.Generator().manual_seed(seed)
    t = lambda: torch.randn((n, *RECORD_SHAPE), generator=g)
    return GuideBatch(
        sample_id=torch.arange(first_id, first_id + n),
        x0=t(),
        x1=t(),
        guides=[t(), t()],
        taus=[1 / 3, 2 / 3],
        teachers=["bench-a", "bench-b"],
        teacher_versions=["1", "1"],
        run=run,
        producer="bench",
    )


def _raw_round(client, stream: str, payload: bytes) -> None:
    client.xadd(stream, {"payload": payload})
    reply = client.xreadgroup("raw", "c", {stream: ">"}, count=1)
    entry_id = reply[0][1][0][0]
    client.xack(stream, "raw", entry_id)
    client.xdel(stream, entry_id)


def _store_round(store: RedisGuideStore, batch: GuideBatch, key: str) -> int:
    store.put(batch, key=key)  # fresh sample ids each round (a store dead-letters repeated ones)
    (delivery,) = store.get("c", timeout_s=5.0)
    checksum = delivery.batch.x0.shape[0] + delivery.batch.guides[1].shape[0]  # tensors are materialised
    store.ack([delivery.id])
    return checksum


def run_bench(
    sizes_mb: list[float], seconds_per_size: float = 3.0, fsync: str = "everysec", min_pairs: int = 5
) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, fsync=fsync) as server:
        client = connect(server.url)
        client.xgroup_create("raw-stream", "raw", id="0", mkstream=True)
        for mb in sizes_mb:
            batch = make_batch(mb, run=f"bench-{mb}")
            store = open_store(server.url, f"bench-{mb}", max_backlog_bytes=1 << 34)
            n = len(batch)
            renumbered = lambda k: replace(batch, sample_id=batch.sample_id + (k + 1) * n)  # tensors shared
            payload_size = encode_batch(batch).size
            raw_payload = torch.randint(0, 255, (payload_size,), dtype=torch.uint8).numpy().tobytes()
            raw_times: list[float] = []
            store_times: list[float] = []
            k = 0
            deadline = time.monotonic() + seconds_per_size
            _raw_round(client, "raw-stream", raw_payload)
            _store_round(store, renumbered(-1), "warmup")
            while time.monotonic() < deadline or len(raw_times) < min_pairs:
                fresh = renumbered(k)
                t0 = time.perf_counter()
                _raw_round(client, "raw-stream", raw_payload)
                t1 = time.perf_counter()
                _store_round(store, fresh, f"k{k}")
                t2 = time.perf_counter()
                raw_times.append(t1 - t0)
                store_times.append(t2 - t1)
                k += 1
            raw_bps = payload_size / statistics.median(raw_times)
            store_bps = payload_size / statistics.median(store_times)
            ratio = median_interval([r / s for r, s in zip(raw_times, store_times)])
            row = {
                "batch_mb": mb,
                "payload_bytes": payload_size,
                "records_per_batch": len(batch),
                "rounds": k,
                "raw_MBps": round(raw_bps / 1e6, 1),
                "store_MBps": round(store_bps / 1e6, 1),
                "store_records_per_s": round(len(batch) * store_bps / payload_size, 1),
                "ratio": round(ratio["median"], 3),
                "ratio_interval": [round(v, 3) for v in ratio["interval"]],
                "interval_coverage": ratio["coverage"],
                "pairs": [[round(r, 7), round(s, 7)] for r, s in zip(raw_times, store_times)],
            }
            rows.append(row)
            log.info(
                f"{mb:>6} MB  raw {row['raw_MBps']:>8} MB/s  store {row['store_MBps']:>8} MB/s  "
                f"ratio {row['ratio']:.3f} [{row['ratio_interval'][0]:.3f}, {row['ratio_interval'][1]:.3f}]  "
                f"({k} pairs)"
            )
            store.delete_run()
            store.close()
        client.close()
        version = server.version()
    return {
        "redis_version": version,
        "fsync": fsync,
        "torch_threads": torch.get_num_threads(),
        "interval_level": INTERVAL_LEVEL,
        "definitions": {
            "ratio": "the median over the pairs (rounds, raw then store) of raw time / store time, "
            "i.e. of store / raw bytes per second",
            "ratio_interval": "a distribution-free interval for that median (order statistics of "
            "the pair ratios; its coverage in interval_coverage)",
            "pairs": "[raw_s, store_s] of each round",
            "raw_MBps, store_MBps": "the median round's",
        },
        "rows": rows,
    }
