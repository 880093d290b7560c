"""The run's first stage: its teachers. ``self`` and ``self:K`` in the teacher pools name teachers the run
trains itself (cached in the run folder); the missing ones are trained here, as parallel Ray tasks when Ray
is up, and the pools are rewritten with their checkpoint paths.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray
import torch

from cluster.logs import quieted
from cluster.config import RunConfig
from teachers.checkpoint import checkpoint_complete, read_meta
from teachers.device_plan import DevicePlan, StagePlan, pool_gpus
from teachers.teacher_refs import own_teacher_index, own_teacher_refs
from teachers.train_teacher import train_teacher

log = logging.getLogger(__name__)

__all__ = [
    "own_teacher_paths",
    "teacher_training_config",
    "cached_teacher_differences",
    "train_teachers",
    "resolve_teachers",
]


def own_teacher_paths(cfg: RunConfig) -> dict[str, tuple[Path, int]]:
    """The run's own teachers that its pools refer to: ``self`` (``RUN/teacher``, seed ``seed``) and
    ``self:K`` (``RUN/teacher-K``, seed ``seed + K``: another teacher of the same recipe, for multi-teacher
    runs). Maps each reference to its directory and training seed."""
    out = {}
    for ref in own_teacher_refs(cfg.teacher_pool):
        k = own_teacher_index(ref)
        assert k is not None  # own_teacher_refs gives only self and self:K
        out[ref] = (cfg.teacher_path if k == 0 else cfg.run_path / f"teacher-{k}", cfg.seed + k)
    return out


def teacher_training_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The configuration a teacher of this run trains with: another training seed, the run's data split (so
    a second teacher never trains on the images the run holds out for evaluation)."""
    data = cfg.data.model_copy(update={"split_seed": cfg.data.split_seed_for(cfg.seed)})
    return cfg.model_copy(update={"seed": seed, "data": data})


# what makes a teacher the one a run would train: its seed, its data and split, its ``teacher`` section (less
# how often it logs). A cached teacher (``RUN/teacher``, ``RUN/teacher-K``) is reused only when these match.
RECIPE_SECTIONS = ("seed", "data", "teacher")
NOT_RECIPE = frozenset({"teacher.log_every"})


def _flat(value, prefix: str) -> dict[str, object]:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}").items()}


def cached_teacher_differences(cfg: RunConfig, path: Path, seed: int) -> list[str]:
    """How the cached teacher in ``path`` was trained otherwise than this run would train it at ``seed``
    (``teacher_training_config``), as its ``model.json`` records it: ``key: cached -> now`` for each
    difference in ``RECIPE_SECTIONS`` (a teacher trained alone, ``train-teacher``, with no ``data.split_seed``
    split with its own seed). A key one side lacks (a checkpoint older than the setting) is no
    difference; nor is a checkpoint that records no training."""
    recorded = read_meta(path).training
    if not recorded:
        return []
    had = {
        k: v for section in RECIPE_SECTIONS if section in recorded for k, v in _flat(recorded[section], section).items()
    }
    if had.get("data.split_seed", 0) is None:  # no split seed of its own: split with its seed
        had["data.split_seed"] = recorded.get("seed")
    want = teacher_training_config(cfg, seed).model_dump(mode="json")
    now = {k: v for section in RECIPE_SECTIONS for k, v in _flat(want[section], section).items()}
    return [f"{k}: {had[k]!r} -> {now[k]!r}" for k in had if k in now and k not in NOT_RECIPE and had[k] != now[k]]


def _train_teacher_task(cfg: RunConfig, out_dir: str, stage: StagePlan | None = None) -> str:
    torch.set_num_threads(1)
    with quieted():
        train_teacher(cfg, out_dir=out_dir, progress=False, stage=stage)
    return out_dir


def train_teachers(jobs: dict[str, RunConfig], stage: StagePlan | None = None) -> float:
    """Train teachers ``{out_dir: config}``: Ray tasks, at most one per core at a time, when Ray is up
    (their reported training times stay honest); in this process otherwise. ``stage``: the run plan's
    teacher-training ``StagePlan`` (its GPUs per task; default: each teacher resolves its own plan).
    Returns the wall seconds."""
    start = time.perf_counter()
    if not ray.is_initialized():
        for out_dir, cfg in jobs.items():
            _train_teacher_task(cfg, out_dir, stage)
        return time.perf_counter() - start
    gpus = stage.gpus if stage is not None else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(_train_teacher_task)
    pending: list[ray.ObjectRef] = []
    for out_dir, cfg in jobs.items():
        if len(pending) >= (os.cpu_count() or 1):
            _, pending = ray.wait(pending, num_returns=1)
        pending.append(task.remote(cfg, out_dir, stage))  # type: ignore[call-arg]  # ray's remote() overloads miss a defaulted parameter
        log.info(f"training teacher {out_dir}")
    ray.get(pending)
    return time.perf_counter() - start


def resolve_teachers(cfg: RunConfig, plan: DevicePlan | None = None) -> RunConfig:
    """The run's teacher pools with ``self``/``self:K`` resolved to checkpoint paths; missing ones are trained
    first (as parallel Ray tasks when Ray is up, else here). With no pools configured, one pool on ``self``.
    With a ``plan``, teachers train on its devices and each pool's actors ask for its GPUs (an explicit
    ``teachers[].num_gpus`` kept)."""
    own = own_teacher_paths(cfg)
    missing = {ref: v for ref, v in own.items() if not checkpoint_complete(v[0])}
    if missing:
        log.info(f"training {len(missing)} teacher(s): " + ", ".join(f"{r} -> {p}" for r, (p, _) in missing.items()))
        with quieted():
            seconds = train_teachers(
                {str(path): teacher_training_config(cfg, seed) for path, seed in missing.values()},
                stage=plan.teacher_training if plan else None,
            )
        log.info(f"teachers trained in {seconds:.1f}s")
    pools = [
        p.model_copy(
            update={
                "checkpoints": [str(own[c][0]) if c in own else c for c in p.checkpoints],
                **({"num_gpus": pool_gpus(plan, p.num_gpus)} if plan else {}),
            }
        )
        for p in cfg.teacher_pool
    ]
    return cfg.model_copy(update={"teacher_pool": pools})
