"""Start the student pool: a Ray Train ``TorchTrainer`` whose workers run ``student.train_loop``.

The driver-side half of student training: scaling (workers, CPUs/GPUs each),
fault tolerance (``FailureConfig(max_failures)``; a restarted group resumes from
the latest checkpoint), checkpoint retention, and collecting what the run
keeps: the exported student, ``metrics.jsonl`` and the consumption audit. Once
Ray Train returns the final checkpoint (every rank's report in), the deliveries
it holds are acknowledged here, not by the ranks (``student.train_loop``).
"""

from __future__ import annotations

import logging
import json
import os
import shutil
import time
from pathlib import Path

import ray

from guide_store.atomic import copy_atomically
from guide_store.open_store import open_store
from student.engine_state import checkpoint_world, rank_file, read_rank_meta
from student.id_ledger import LEDGER_DIR, pool_history
from student.settings import TRAIN_LOOP_KEY, StudentJob
from student.train_loop import train_student_worker
from teachers.checkpoint import copy_checkpoint
from teachers.device_plan import DevicePlan, resolve_device
from teachers.ensemble import TeacherSpec

log = logging.getLogger(__name__)

__all__ = ["run_student_pool", "consumption_audit"]


def consumption_audit(checkpoint_dir: str | Path, world_size: int) -> dict:
    """Which sample ids each rank trained on (from the rank files of the final checkpoint): per-rank counts,
    ids consumed by more than one rank (or twice by one), and the covered id range."""
    seen: dict[int, int] = {}
    per_rank, twice = {}, 0
    for rank in range(world_size):
        runs = read_rank_meta(rank_file(checkpoint_dir, rank))["extra"].get("consumed", [])
        per_rank[str(rank)] = sum(c for _, c in runs)
        for start, count in runs:
            for i in range(start, start + count):
                twice += i in seen
                seen[i] = rank
    return {
        "per_rank": per_rank,
        "records": len(seen),
        "consumed_twice": twice,
        "min_id": min(seen) if seen else None,
        "max_id": max(seen) if seen else None,
    }


def _acknowledge(store_url: str | None, run: str, held: list[str]) -> int:
    """Acknowledge the deliveries the final checkpoint holds (records acknowledged; 0 for Parquet)."""
    if store_url is None or not held:
        return 0
    store = open_store(store_url, run)
    try:
        return store.ack(held)
    finally:
        store.close()


def run_student_pool(
    cfg,
    store_url: str | None,
    data_shape: tuple[int, ...],
    teacher: TeacherSpec | None,
    plan: DevicePlan | None = None,
) -> dict:
    """Train the student with ``plan.student_workers`` DeepSpeed ranks (``teacher``: the run's first teacher
    when the student starts from it, ``StudentJob.of``; ``plan``: the run's device plan, by default resolved
    for the Ray cluster's GPUs); returns a summary, with the device, precision and
    parameter dtype the ranks trained with, and leaves the exported student in ``cfg.student_path`` and the
    training log in ``RUN/metrics.jsonl``."""
    # Ray Train pulls in Ray Data and pandas (half a second): imported when a pool starts, not with the CLI
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig  # not the run configuration (cluster.config.RunConfig)
    from ray.train.torch import TorchConfig, TorchTrainer

    sc = cfg.student
    plan = plan or resolve_device(cfg, ray.cluster_resources().get("GPU", 0))
    for note in plan.notes:
        log.info(note)
    workers, gpus = plan.student_workers, plan.student.gpus
    # an elastic pool (student.workers: [min, max]): Ray Train starts it with what the cluster holds, at least
    # min, restarts it smaller when a node is lost and grows it back, each time from the latest checkpoint
    # (student.engine_state reshards it); it counts room from node totals, so its workers should ask for a
    # resource the teacher actors do not use (student.resources_per_worker)
    sizes = (plan.student_min_workers, workers) if plan.student_min_workers < workers else workers
    use_gpu = plan.student.device == "cuda"
    resources = {"CPU": sc.cpus_per_worker, **({"GPU": gpus} if use_gpu else {}), **sc.resources_per_worker}
    storage = sc.storage_path or str((cfg.run_path / "train").resolve())
    job = StudentJob.of(cfg, store_url, data_shape, teacher)
    trainer = TorchTrainer(
        train_student_worker,
        train_loop_config={TRAIN_LOOP_KEY: job},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        # ray.train hands out Train v2's ScalingConfig (elastic sizes, resize checks) at run time; mypy reads v1's
        scaling_config=ScalingConfig(  # type: ignore[call-arg]
            num_workers=sizes,  # type: ignore[arg-type]
            use_gpu=use_gpu,
            resources_per_worker=resources,
            elastic_resize_monitor_interval_s=sc.resize_check_s,
        ),
        run_config=TrainRunConfig(
            name=f"{cfg.name}-student-{int(time.time())}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=sc.keep_checkpoints),
        ),
    )
    shutil.rmtree(cfg.run_path / LEDGER_DIR, ignore_errors=True)  # this pool's trained ids only
    (cfg.run_path / "metrics.jsonl").unlink(missing_ok=True)  # rank 0 appends this pool's lines as it goes
    size = f"{sizes[0]} to {sizes[1]}" if isinstance(sizes, tuple) else f"{workers}"
    log.info(
        f"student pool: {size} DeepSpeed worker(s) (ZeRO {sc.zero_stage}, {plan.student.device}, "
        f"{plan.student.precision}), objective {sc.objective}, "
        f"{sc.steps} steps of {sc.batch_size} records per rank"
        + (f", the last {sc.dm_phase.steps} of them distribution matching" if sc.dm_phase.steps else "")
        + f"; checkpoints in {storage}"
    )
    start = time.perf_counter()
    # Ray Train's controller polls its workers every 2 s by default; a checkpoint report blocks its rank until
    # the next poll, and a finished pool is seen only then. 0.5 s (Ray Train passes the driver's value on to
    # its controller; a value the user set is kept)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"student training reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as d:
        d = Path(d)
        copy_checkpoint(d / "student", cfg.student_path)
        copy_atomically(d / "metrics.jsonl", cfg.run_path / "metrics.jsonl")
        final_world = checkpoint_world(d)  # an elastic pool may end smaller than it started
        audit = consumption_audit(d, final_world)
        resumes = read_rank_meta(rank_file(d, 0))["extra"].get("resumes", 0)
        held = [e for r in range(final_world) for e in read_rank_meta(rank_file(d, r))["extra"].get("unacked", [])]
    final_acks = _acknowledge(store_url, cfg.name, held)
    history = [json.loads(line) for line in (cfg.run_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in history if "loss" in r]
    final = history[-1]
    return {
        "seconds": round(seconds, 2),
        "steps": final["step"],
        "records_consumed": final["records_consumed"],
        "guide_wait_s_rank0": final["guide_wait_s"],
        "final_loss": logged[-1]["loss"] if logged else None,
        "first_loss": logged[0]["loss"] if logged else None,
        "consumption": audit,
        "resumes": resumes,
        "checkpoint": str(result.checkpoint.path),
        "storage": storage,
        "workers": workers,
        "final_workers": final_world,
        "pool_history": pool_history(cfg.run_path / LEDGER_DIR),
        "final_acknowledged_records": final_acks,
        **{k: final.get(k) for k in ("device", "precision", "parameter_dtype")},
    }
