"""A producer or consumer process for the soak test (run as a script; killed at random by the test).

    soak_worker.py produce URL RUN FIRST_ID BLOCKS BLOCK_SIZE
    soak_worker.py consume URL RUN NAME LOG STOP_FILE HOLD_S

A consumer holds each batch for about HOLD_S seconds ("training"), so that consumers are the bottleneck and a
killed one almost always leaves entries pending for the others to reclaim.
"""

import json
import os
import random
import sys
import time

import torch

from guide_store.redis_store import RedisGuideStore
from guide_store.schema import GuideBatch

torch.set_num_threads(1)


def produce(url, run, first, blocks, size):
    store = RedisGuideStore(url, run, max_backlog_records=2000, put_timeout_s=120)
    for k in range(blocks):
        start = first + k * size
        if k % 37 == 5:  # now and then a payload that must be dead-lettered
            store.put_raw(b"\x01" * 64, size, producer=f"soak-{first}", key=f"bad-{start}")
            continue
        g = torch.Generator().manual_seed(start)
        t = lambda: torch.randn(size, 16, generator=g)
        store.put(
            GuideBatch(
                sample_id=torch.arange(start, start + size),
                x0=t(),
                x1=t(),
                guides=[t(), t()],
                taus=[1 / 3, 2 / 3],
                teachers=["a", "b"],
                teacher_versions=["1", "1"],
                run=run,
                producer=f"soak-{first}",
            )
        )
        time.sleep(random.uniform(0.0, 0.02))


def consume(url, run, name, log_path, stop_file, hold_s):
    store = RedisGuideStore(url, run, claim_idle_s=2.0)
    with open(log_path, "a") as log:
        while True:
            got = store.get(name, timeout_s=0.5, count=2)
            if not got:
                if os.path.exists(stop_file):
                    return
                continue
            time.sleep(random.uniform(0.5, 1.5) * float(hold_s))  # "training" on the batch
            for d in got:  # one ack per entry, so the log says exactly which entry each count belongs to
                acked = store.ack([d.id])
                log.write(
                    json.dumps(
                        {
                            "consumer": name,
                            "entry": d.id,
                            "reclaimed": d.reclaimed,
                            "records": len(d.batch),
                            "acked": acked,
                        }
                    )
                    + "\n"
                )
            log.flush()


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "produce":
        produce(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
    else:
        consume(*rest)
