"""``bezier-distill guides bench``: guide records per second from 1 and 2 teacher actors, against the
same record-building work done in-process with no actors and no store (the raw baseline), same run.

Rates are steady-state: from the first finished block to the last (actor start-up is left out, it is
reported separately). Each actor uses one torch thread, as configured for CPU actors.
"""

from __future__ import annotations

import tempfile
import time

import ray
import torch

from cluster.config import RunConfig, TeacherPoolConfig
from cluster.controller_actor import start_controller
from guide_store.embedded import EmbeddedRedis
from teachers.teacher_actor import build_block, load_teachers
from teachers.train_teacher import load_run_data

__all__ = ["run_production_bench"]


def _raw_rate(cfg: RunConfig, blocks: int) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_run_data(cfg)
        teachers = load_teachers(cfg.teachers[0], cfg.guides.n_guides, data.data_shape)
        build_block(cfg, data.train, teachers, 0, "warmup")
        start = time.perf_counter()
        records = sum(len(build_block(cfg, data.train, teachers, b, "raw")) for b in range(1, blocks + 1))
        return records / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def _actor_rate(cfg: RunConfig, replicas: int, url: str) -> dict:

    pool = cfg.teachers[0].model_copy(update={"replicas": replicas})
    run = cfg.model_copy(update={"name": f"{cfg.name}-bench{replicas}", "teachers": [pool]})
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
    return {"replicas": replicas, "records_per_s": round(steady, 1), "wall_s": round(total, 2),
            "startup_s": round(times[0] - (time.time() - total), 2) if times else None}


def run_production_bench(cfg: RunConfig, checkpoint: str, blocks: int = 24, progress=print) -> dict:

    pool = TeacherPoolConfig(name="bench", checkpoints=[checkpoint], threads=1, num_cpus=1)
    guides = cfg.guides.model_copy(update={"num_samples": blocks * cfg.guides.block_size})
    cfg = cfg.model_copy(update={"teachers": [pool], "guides": guides})
    raw = _raw_rate(cfg, max(4, blocks // 4))
    progress(f"raw (in-process, 1 thread, no store): {raw:.1f} records/s")
    rows = []
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, namespace=cfg.namespace)
    try:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, fsync=cfg.store.fsync) as server:
            for replicas in (1, 2):
                row = _actor_rate(cfg, replicas, server.url)
                row["ratio_to_raw"] = round(row["records_per_s"] / raw, 3)
                rows.append(row)
                progress(f"{replicas} actor(s): {row['records_per_s']:.1f} records/s, ratio to raw "
                         f"{row['ratio_to_raw']:.2f} (wall {row['wall_s']}s incl. start-up)")
    finally:
        ray.shutdown()
    return {"raw_records_per_s": round(raw, 1), "block_size": cfg.guides.block_size, "blocks": blocks,
            "path": cfg.guides.path, "rule": cfg.guides.rule, "coupling": cfg.guides.coupling,
            "coupling_solver": f"{cfg.guides.coupling_solver}x{cfg.guides.coupling_steps}", "rows": rows}
