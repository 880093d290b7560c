"""Guide production rates: teacher actors putting records into the store, against the same record-building
work done in-process with no actors and no store (the raw baseline), same run.

``bezier-distill bench guides`` (alias ``guides bench``) measures 1 and 2 actors with ``run_production_bench``;
``bench pipeline`` (``cluster.pipeline_bench``) takes the same two measurements, ``timed_blocks`` and
``actor_rate``, for its production rows (and the records its student reads are the raw blocks).

Rates are steady-state: from the first finished block to the last (actor start-up is left out, it is
reported separately). Each actor uses one torch thread, as configured for CPU actors; ``timed_blocks`` takes the
thread count its baseline should have (one here; the actors' threads between them in ``bench pipeline``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager

import ray
import torch

from cluster.config import RunConfig, TeacherPoolSettings
from cluster.controller_actor import start_controller
from cluster.ray_start import start_ray
from guide_store.embedded import EmbeddedRedis
from guide_store.schema import GuideBatch
from teachers.teacher_actor import build_block, load_placed_teachers
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = ["run_production_bench", "bench_pool_config", "local_ray", "timed_blocks", "actor_rate"]


def bench_pool_config(cfg: RunConfig, checkpoint: str, blocks: int, num_gpus: float = 0.0) -> RunConfig:
    """``cfg`` with one teacher pool ``bench`` on ``checkpoint`` (one thread and one CPU per actor, ``num_gpus``
    of a GPU each) and ``blocks`` blocks to produce."""
    pool = TeacherPoolSettings(name="bench", checkpoints=[checkpoint], threads=1, num_cpus=1, num_gpus=num_gpus)
    guides = cfg.guides.model_copy(update={"num_samples": blocks * cfg.guides.block_size})
    return cfg.model_copy(update={"teacher_pool": [pool], "guides": guides})


@contextmanager
def local_ray(namespace: str, num_cpus: int):
    """A private local Ray for a benchmark (never one a user started), shut down on the way out."""
    start_ray("private", namespace, num_cpus, dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def timed_blocks(cfg: RunConfig, blocks: int, threads: int = 1) -> tuple[list[GuideBatch], float]:
    """Blocks ``0 .. blocks - 1`` of ``cfg``'s run built in this process on ``threads`` torch threads, with the
    first pool's teachers placed as its actors place them (``load_placed_teachers``); and the raw rate,
    records per second over all blocks but the first (its warm-up)."""
    if blocks < 2:
        raise ValueError(f"the raw rate needs a warm-up block and at least one timed block, got {blocks}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = load_run_data(cfg.data, cfg.seed)
        teachers = load_placed_teachers(cfg, cfg.teacher_pool[0], data.data_shape)
        built = [build_block(cfg, data.train, teachers, 0, "raw")]
        start = time.perf_counter()
        built += [build_block(cfg, data.train, teachers, b, "raw") for b in range(1, blocks)]
        return built, sum(len(b) for b in built[1:]) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def actor_rate(cfg: RunConfig, replicas: int, url: str) -> dict:
    """``replicas`` actors of the first pool produce every block of ``cfg`` into the store at ``url`` (run
    ``NAME-benchREPLICAS``); the steady rate counts the blocks after each actor's first."""
    pool = cfg.teacher_pool[0].model_copy(update={"replicas": replicas})
    run = cfg.model_copy(update={"name": f"{cfg.name}-bench{replicas}", "teacher_pool": [pool]})
    start = time.perf_counter()
    controller = start_controller(run, url)
    ray.get(controller.start_pools.remote())
    while not (state := ray.get(controller.state.remote()))["finished"]:
        time.sleep(0.2)
    total = time.perf_counter() - start
    for name in state["workers"]:
        ray.get(controller.remove_teacher.remote(name, True))
    ray.kill(controller)
    times = sorted(state["done_times"])
    steady = (len(times) - replicas) * run.guides.block_size / (times[-1] - times[replicas - 1])
    return {
        "replicas": replicas,
        "records_per_s": round(steady, 1),
        "wall_s": round(total, 2),
        "startup_s": round(times[0] - (time.time() - total), 2) if times else None,
    }


def run_production_bench(cfg: RunConfig, checkpoint: str, blocks: int = 24) -> dict:
    cfg = bench_pool_config(cfg, checkpoint, blocks)
    raw = timed_blocks(cfg, max(4, blocks // 4) + 1)[1]
    log.info(f"raw (in-process, 1 thread, no store): {raw:.1f} records/s")
    rows = []
    with local_ray(cfg.namespace, num_cpus=4):
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, fsync=cfg.store.fsync) as server:
            for replicas in (1, 2):
                row = actor_rate(cfg, replicas, server.url)
                row["ratio_to_raw"] = round(row["records_per_s"] / raw, 3)
                rows.append(row)
                log.info(
                    f"{replicas} actor(s): {row['records_per_s']:.1f} records/s, ratio to raw "
                    f"{row['ratio_to_raw']:.2f} (wall {row['wall_s']}s incl. start-up)"
                )
    return {
        "raw_records_per_s": round(raw, 1),
        "block_size": cfg.guides.block_size,
        "blocks": blocks,
        "path": cfg.guides.path,
        "rule": cfg.guides.rule,
        "coupling": cfg.guides.coupling,
        "coupling_solver": f"{cfg.guides.coupling_solver}x{cfg.guides.coupling_steps}",
        "rows": rows,
    }
