"""One small real run (Ray Train + DeepSpeed on CPU, a real supervised redis-server) with a fault at each hard
moment of the student pool: a rank killed right after a checkpoint is reported, a rank killed after the
checkpoint at step == ``student.steps`` while it holds deliveries taken since (before its final report), a
rank killed right after its final report, and the store's server killed during the final drain. The run's id
ledger, built from ids alone, must find every planned record trained once and nothing left pending.

Before the fixes: a group restored at ``steps`` called itself exhausted before reading the deliveries the dead
group held (records lost), and a rank acknowledged everything once its own final report returned (records
lost when the group resumed from the checkpoint before)."""

import os
import signal
import threading
import time

import pytest

from cluster.ledger import build_ledger, failures
from cluster.student_pool import run_student_pool
from teachers.ensemble import TeacherSpec
from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore
from student.fault_hooks import KILL_ENV, MOMENTS, landed
from student.id_ledger import LEDGER_DIR, trained_steps

from test_student_pool import fill_store, pool_config, teacher  # noqa: F401 - teacher is a fixture

pytestmark = pytest.mark.slow


def _kill_redis_in_the_final_drain(server: EmbeddedRedis, url: str, run: str, produced: int, done: list) -> None:
    """SIGKILL the server (its supervisor restarts it on its append-only file) once every entry was handed
    out and the ranks are finishing: the last acknowledgements and the drain meet a server that is away."""
    store = RedisGuideStore(url, run)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            stats = store.stats()
        except Exception:  # noqa: BLE001 - the server is being restarted by someone else's fault: ask again
            time.sleep(0.2)
            continue
        if stats["produced"] == produced and stats["undelivered_entries"] == 0 and stats["pending_entries"]:
            os.kill(server.proc.pid, signal.SIGKILL)
            done.append(time.monotonic())
            return
        time.sleep(0.05)


def test_faults_at_the_hard_moments_lose_nothing(ray_cluster, teacher, tmp_path, monkeypatch):  # noqa: F811
    # 50 blocks over 2 ranks: each rank takes ~25 deliveries, so after the checkpoint at step 20 (== steps) each
    # still takes a few before the stream runs dry, and holds them when the last rank kills itself
    cfg = pool_config(
        tmp_path, teacher, "hard", blocks=50, steps=20, checkpoint_every=10, max_failures=4, zero_stage=1, max_reuse=2.0
    )
    monkeypatch.setenv(KILL_ENV, ",".join(MOMENTS))
    redis_killed = []
    with EmbeddedRedis(tmp_path / "redis") as server:
        server.supervise()
        store = fill_store(cfg, server.url)
        killer = threading.Thread(
            target=_kill_redis_in_the_final_drain,
            args=(server, server.url, cfg.name, cfg.guides.num_samples, redis_killed),
        )
        killer.start()
        summary = run_student_pool(cfg, server.url, (2,), TeacherSpec((teacher,)))
        killer.join(timeout=60)
        stats = store.stats()
        letters = store.dead_letters(count=1000)
        pending = store.pending_sample_ids()
    assert landed(cfg.run_path) == sorted(MOMENTS), landed(cfg.run_path)
    assert redis_killed and server.restarts >= 1, "the server was not killed in the final drain"
    assert summary["resumes"] >= 2, summary  # the kill after the final report may end the pool as it is
    plan = {b: [64 * b, 64] for b in range(50)}
    ledger = build_ledger(plan, plan, trained_steps(cfg.run_path / LEDGER_DIR), letters, pending)
    # no batch may be trained twice: a restored group trains on from its checkpoint, whose ids are its own
    assert failures(ledger, faults_landed=0, batch_size=64) == [], ledger
    assert ledger["trained"] == ledger["planned"] == cfg.guides.num_samples, ledger
    assert stats["pending_entries"] == 0 and stats["acknowledged"] == cfg.guides.num_samples, stats


def test_a_delivery_larger_than_a_batch_is_trained_fresh_once_across_a_restart(
    ray_cluster,
    teacher,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    # blocks of 96 records, batches of 64: a delivery is trained fresh over two steps (64 + 32), so the checkpoint
    # at step 5 falls inside one; the last rank is killed right after it and the group resumes from it
    cfg = pool_config(tmp_path, teacher, "wide", blocks=24, steps=10, checkpoint_every=5, max_failures=2, max_reuse=2.0)
    cfg = cfg.model_copy(update={"guides": cfg.guides.model_copy(update={"block_size": 96, "num_samples": 96 * 16})})
    monkeypatch.setenv(KILL_ENV, "after_checkpoint")
    with EmbeddedRedis(tmp_path / "redis") as server:
        store = fill_store(cfg, server.url)
        summary = run_student_pool(cfg, server.url, (2,), TeacherSpec((teacher,)))
        letters, pending = store.dead_letters(count=100), store.pending_sample_ids()
    assert landed(cfg.run_path) == ["after_checkpoint"] and summary["resumes"] >= 1, summary
    plan = {b: [96 * b, 96] for b in range(16)}
    steps = trained_steps(cfg.run_path / LEDGER_DIR)
    assert max(sum(c for _, c in runs) for _, _, runs in steps) == 64  # never more fresh records than a batch
    ledger = build_ledger(plan, plan, steps, letters, pending)
    assert failures(ledger, faults_landed=0, batch_size=64) == [], ledger
    assert ledger["trained"] == 96 * 16 and ledger["trained_twice"] == 0, ledger
