"""Soak: several producer and consumer processes for 15 seconds (BEZIER_SOAK_SECONDS), consumers SIGKILLed at random.

At the end every produced record is acknowledged or dead-lettered, nothing is pending, and no entry was
acknowledged (counted) by two consumers.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guide_store.redis_store import RedisGuideStore

WORKER = str(Path(__file__).with_name("soak_worker.py"))
SOAK_SECONDS = float(os.environ.get("BEZIER_SOAK_SECONDS", "15"))  # a longer soak: BEZIER_SOAK_SECONDS=600


@pytest.mark.slow
def test_soak_with_random_consumer_deaths(redis_server, run_name, tmp_path):
    rng = random.Random(0)
    url, log, stop = redis_server.url, tmp_path / "acks.jsonl", tmp_path / "stop"
    env_py = [sys.executable, WORKER]
    producers = [
        subprocess.Popen(env_py + ["produce", url, run_name, str(10**6 * (p + 1)), "400", "8"]) for p in range(2)
    ]
    consumers, serial, kills = {}, 0, 0
    # consumers are the bottleneck for the soak's length: 3 of them take about SOAK_SECONDS for all entries
    hold_s = min(0.1, 0.8 * SOAK_SECONDS * 3 * 2 / (2 * 400))

    def spawn():
        nonlocal serial
        serial += 1
        name = f"consumer-{serial}"
        consumers[name] = subprocess.Popen(env_py + ["consume", url, run_name, name, str(log), str(stop), str(hold_s)])

    for _ in range(3):
        spawn()

    def working():  # consumers that have acknowledged something, so are inside their loop (a loaded machine
        # can take seconds to start one; killing it then would test nothing)
        seen = {json.loads(line)["consumer"] for line in log.read_text().splitlines()} if log.exists() else set()
        return sorted(seen & set(consumers))

    start = time.monotonic()
    while time.monotonic() - start < SOAK_SECONDS or (kills < 4 and time.monotonic() - start < 10 * SOAK_SECONDS):
        time.sleep(rng.uniform(1.0, 3.0))
        if not working():
            continue
        victim = rng.choice(working())
        consumers.pop(victim).kill()  # SIGKILL: its pending entries must be reclaimed by others
        kills += 1
        spawn()
    for p in producers:
        assert p.wait(timeout=300) == 0
    stop.touch()
    for proc in consumers.values():
        assert proc.wait(timeout=120) == 0

    store = RedisGuideStore(url, run_name, claim_idle_s=0.1)
    s = store.stats()
    assert kills >= 4
    assert s["produced"] == 2 * 400 * 8
    assert s["pending"] == 0 and s["undelivered"] == 0
    assert s["produced"] == s["acknowledged"] + s["dead_lettered"], s
    assert s["dead_lettered"] > 0 and s["reclaimed"] > 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    counted = [row["entry"] for row in rows if row["acked"]]
    assert len(counted) == len(set(counted)), "an entry was acknowledged (counted) twice"
    # a second ack of an entry only ever comes from a consumer that got it by reclaiming, and counts zero
    for row in rows:
        if not row["acked"]:
            assert any(r["entry"] == row["entry"] and r["acked"] for r in rows) or row["reclaimed"]
    assert sum(row["acked"] for row in rows) <= s["acknowledged"]
