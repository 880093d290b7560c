"""The student pool on a real local Ray cluster: Ray Train + DeepSpeed (CPU, gloo) reading a real Redis store.

Guides are built by the same function the teacher actors run (``build_block``) from a real, small teacher,
and put into the store before the pool starts, so these tests isolate the consumer side.
"""

import json
import os
import signal
import threading
import time

import pytest
import torch

from cluster.chaos import train_workers  # the shared local Ray's (this process's descendants) only
from cluster.config import parse_config
from cluster.student_pool import run_student_pool
from teachers.ensemble import TeacherSpec
from student.guide_feed import consumer_name
from guide_store.embedded import EmbeddedRedis
from guide_store.parquet import ParquetGuideSink
from guide_store.redis_store import RedisGuideStore
from teachers.teacher_actor import build_block, load_teachers
from teachers.train_teacher import load_run_data, train_teacher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("student-teacher")
    cfg = parse_config(
        {
            "name": "t",
            "run_dir": str(tmp),
            "data": {"name": "eight_gaussians", "n_train": 2000, "n_held_out": 200},
            "teacher": {
                "network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16},
                "steps": 300,
                "batch_size": 128,
                "log_every": 100,
            },
        }
    )
    return str(train_teacher(cfg, progress=False))


def pool_config(tmp_path, teacher, name, blocks=24, **student):
    return parse_config(
        {
            "name": name,
            "seed": 3,
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 2000, "n_held_out": 200},
            "teacher": {"network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16}},
            "guides": {
                "path": "cubic",
                "coupling": "inversion",
                "coupling_steps": 8,
                "block_size": 64,
                "num_samples": 64 * blocks,
            },
            "teachers": [{"name": "t", "checkpoints": [teacher]}],
            "student": {
                "workers": 2,
                "batch_size": 64,
                "lr": 2e-3,
                "warmup_steps": 5,
                "log_every": 10,
                "resources_per_worker": {"student_host": 1},  # placement: the test cluster offers 8
                "max_reuse": 3.0,
                "zero_stage": 1,
                **student,
            },
            "namespace": "bezier-distill-tests",
        }
    )


def fill_store(cfg, sink):
    """Put every block of the run into ``sink`` (a Redis URL, or a Parquet sink) and return it (or the store)."""
    data = load_run_data(cfg.data, cfg.seed).train
    teachers = load_teachers(cfg.teacher_pool[0], cfg.guides.n_guides, (2,))
    store = RedisGuideStore(sink, cfg.name) if isinstance(sink, str) else sink
    for block in range(cfg.guides.num_samples // cfg.guides.block_size):
        store.put(build_block(cfg, data, teachers, block, "test"))
    return store


def test_two_deepspeed_ranks_share_the_stream_and_learn(ray_cluster, teacher, tmp_path):
    cfg = pool_config(tmp_path, teacher, "pool-a", steps=60, checkpoint_every=30, objective="velocity")
    with EmbeddedRedis(tmp_path / "redis") as server:
        store = fill_store(cfg, server.url)
        summary = run_student_pool(cfg, server.url, (2,), TeacherSpec((teacher,)))
        stats = store.stats()
    assert stats["produced"] == stats["acknowledged"] == cfg.guides.num_samples and stats["backlog"] == 0
    audit = summary["consumption"]
    assert audit["records"] == cfg.guides.num_samples and audit["consumed_twice"] == 0
    assert sum(audit["per_rank"].values()) == cfg.guides.num_samples and min(audit["per_rank"].values()) > 0
    assert summary["steps"] >= 60
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary
    history = [json.loads(x) for x in (cfg.run_path / "metrics.jsonl").read_text().splitlines()]
    assert all("guide_wait_s" in r and r["guide_wait_s"] >= 0 for r in history)
    assert (cfg.student_path / "model.safetensors").is_file()
    meta = json.loads((cfg.student_path / "model.json").read_text())
    assert meta["role"] == "student" and meta["extra"]["objective"] == "velocity"


def _checkpoints(storage_dir) -> int:
    return len([p for p in storage_dir.glob("*/*") if p.name.startswith("checkpoint_")])


def _kill_a_worker(killed: list) -> None:
    workers = train_workers()
    if workers:
        os.kill(workers[-1], signal.SIGKILL)
        killed.append(workers[-1])


def _kill_twice(storage_dir, url: str, run: str, killed: list, timeout=240):
    """Kill a rank while the ranks hold records and no checkpoint exists yet, then again a few seconds after
    the first checkpoint, while records are still being delivered (a checkpoint counts once Ray Train's
    controller has every rank's report)."""
    store = RedisGuideStore(url, run)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (store.stats()["pending"] and train_workers()):
        time.sleep(0.05)
    if _checkpoints(storage_dir) == 0:
        _kill_a_worker(killed)
    while time.monotonic() < deadline and _checkpoints(storage_dir) < 1:
        time.sleep(0.1)
    time.sleep(1.5)  # three polls of the Train controller (0.5 s, `run_student_pool`)
    _kill_a_worker(killed)


def test_killed_workers_resume_and_every_record_is_trained_on(ray_cluster, teacher, tmp_path):
    # max_reuse 2: a fresh delivery every other step or so, so records keep arriving after the checkpoint
    # 300 steps: the second kill lands before the end (a rank runs ~50 steps/s here)
    # prefetch 2: reading ahead must not lose records or train them twice across restarts
    cfg = pool_config(
        tmp_path,
        teacher,
        "pool-b",
        blocks=40,
        steps=300,
        checkpoint_every=15,
        max_failures=3,
        zero_stage=2,
        max_reuse=2.0,
        prefetch=2,
    )
    killed = []
    with EmbeddedRedis(tmp_path / "redis") as server:
        store = fill_store(cfg, server.url)
        # a rank of an earlier worker group that died holding a delivery: that rank gets it back
        (held,) = store.get(consumer_name(cfg.name, 1), timeout_s=5.0)
        killer = threading.Thread(target=_kill_twice, args=(cfg.run_path / "train", server.url, cfg.name, killed))
        killer.start()
        summary = run_student_pool(cfg, server.url, (2,), TeacherSpec((teacher,)))
        killer.join()
        stats = store.stats()
    assert len(killed) == 2, f"killed {killed}: the pool finished before both kills"
    assert summary["resumes"] >= 1, summary
    assert summary["steps"] >= 300
    assert stats["produced"] == stats["acknowledged"] + stats["dead_lettered"] == cfg.guides.num_samples
    assert stats["pending"] == 0 and stats["backlog"] == 0
    assert stats["reclaimed"] >= len(held.batch)
    audit = summary["consumption"]
    # nothing lost: every produced record was trained on (a record acknowledged right after its step, as
    # before, was gone when its rank died before the next checkpoint), and none by two ranks
    assert audit["records"] == cfg.guides.num_samples and audit["consumed_twice"] == 0, audit


def test_pool_trains_from_an_exported_parquet_directory(ray_cluster, teacher, tmp_path):
    cfg = pool_config(
        tmp_path,
        teacher,
        "pool-c",
        blocks=8,
        steps=20,
        checkpoint_every=10,
        source="parquet",
        parquet_dir=str(tmp_path / "guides"),
    )
    with ParquetGuideSink(tmp_path / "guides") as sink:
        fill_store(cfg, sink)
    summary = run_student_pool(cfg, None, (2,), TeacherSpec((teacher,)))
    audit = summary["consumption"]
    assert audit["records"] == cfg.guides.num_samples and audit["consumed_twice"] == 0
    assert audit["per_rank"] == {"0": 256, "1": 256} and summary["steps"] >= 20


def test_a_distribution_phase_trains_one_fake_field_for_all_ranks(ray_cluster, teacher, tmp_path):
    """The last ``finetune.steps`` steps run the frozen teacher and a fake field inside both DeepSpeed ranks:
    the ranks' checkpoints keep the fake field and its Adam state, and the fields are one (their gradients are
    averaged over ranks, though each rank's samples differ)."""
    from safetensors.torch import load_file

    from student.engine_state import read_rank_meta

    cfg = pool_config(
        tmp_path,
        teacher,
        "pool-dm",
        blocks=8,
        steps=30,
        checkpoint_every=10,
        source="parquet",
        parquet_dir=str(tmp_path / "guides"),
        finetune={"steps": 15, "fake_updates": 2, "sample_steps": [1, 2]},
    )
    with ParquetGuideSink(tmp_path / "guides") as sink:
        fill_store(cfg, sink)
    summary = run_student_pool(cfg, None, (2,), TeacherSpec((teacher,)))
    assert summary["steps"] >= 30
    ranks = sorted((cfg.run_path / "train").rglob("rank-*.safetensors"), key=lambda p: p.stat().st_mtime)[-2:]
    assert sorted(p.name for p in ranks) == ["rank-0.safetensors", "rank-1.safetensors"]
    fields = []
    for path in ranks:
        meta = read_rank_meta(path)
        assert meta["extra"]["step"] >= 30 and "distribution" in meta["extra"], meta["extra"].keys()
        tensors = load_file(str(path))
        fields.append({k: v for k, v in tensors.items() if k.startswith("data/distribution.fake.")})
        assert any(k.startswith("data/distribution.optimizer.state.") for k in tensors)
    assert fields[0] and fields[0].keys() == fields[1].keys()
    assert all(torch.equal(fields[0][k], fields[1][k]) for k in fields[0])
    from teachers.checkpoint import load_checkpoint

    initial = load_checkpoint(teacher)[0].state_dict()
    moved = [k for k, v in initial.items() if not torch.equal(fields[0][f"data/distribution.fake.{k}"], v.float())]
    assert moved, "the fake field never trained"
    # the metrics lines say which intervals were the phase's, with its constant learning rate (default 4e-6)
    lines = [json.loads(line) for line in (cfg.run_path / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in lines if "loss" in r}
    assert [s for s, r in sorted(logged.items()) if r.get("phase") == "distribution"] == [20, 30]
    assert logged[20]["lr"] == logged[30]["lr"] == 4e-6 and logged[10]["lr"] > 4e-6
