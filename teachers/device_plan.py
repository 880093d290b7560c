"""Where each stage of a run computes, and in which precision: one function decides, from the run's
``device``/``precision`` settings and the GPUs the Ray cluster has.

Stages: teacher training (Ray tasks), guide production (teacher actors), the student pool (Ray Train +
DeepSpeed) and evaluation (the driver). ``resolve_device`` is pure logic, so it is tested with made-up GPU
counts; each stage then confirms the plan on the device it was given (``resolve_precision`` again, with
the GPU's real bf16 support) and records what it actually used. It needs the configuration and torch
only, so it lives in the lowest package whose stages read it (teacher training and the teacher actor).

GPU sharing while guides and the student run at the same time: Ray places a fractional GPU request on
one GPU that has the share free, filling GPUs in no order we control (the teacher actors start first and
may all land on one GPU). So the plan holds whatever the packing: a student rank takes
``STUDENT_GPU_SHARE`` of a GPU (more than half, so Ray never puts two ranks on one GPU: NCCL refuses that),
and all teacher actors together take at most ``1 - STUDENT_GPU_SHARE``, so even packed onto one GPU they
leave a rank's share free on every GPU. Shares are rounded down, never up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Protocol, Sequence

import torch

from guide_store.settings import ConfigError
from teachers.settings import PRECISIONS, GuidesSettings, TeacherPoolSettings
from teachers.teacher_refs import own_teacher_refs

__all__ = [
    "PlanRequest",
    "StudentPlacement",
    "StagePlan",
    "DevicePlan",
    "resolve_device",
    "resolve_precision",
    "student_precision_setting",
    "guides_precision_setting",
    "pool_gpus",
    "STUDENT_GPU_SHARE",
]

STUDENT_GPU_SHARE = 0.51


class StudentPlacement(Protocol):
    """What the plan reads of the student's settings (``student.section.StudentSettings``)."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def precision(self) -> str: ...

    @property
    def gpus_per_worker(self) -> float: ...

    @property
    def min_workers(self) -> int: ...

    @property
    def max_workers(self) -> int: ...


class PlanRequest(Protocol):
    """What the plan reads of a run's configuration: its ``device`` and ``precision``, the guides' and the
    student's own precision, and the GPUs the teacher pool and the student workers ask for."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def device(self) -> str: ...

    @property
    def precision(self) -> str: ...

    @property
    def guides(self) -> GuidesSettings: ...

    @property
    def teacher_pool(self) -> Sequence[TeacherPoolSettings]: ...

    @property
    def student(self) -> StudentPlacement: ...


def resolve_precision(requested: str, key: str, on_gpu: bool, bf16_supported: bool = True) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for a setting ``key`` asking for ``requested`` (one of ``PRECISIONS``).

    ``auto`` is bf16 on a GPU that supports it and fp32 otherwise (the CPU included: bf16 matmuls are
    slower than fp32 on most CPUs). An explicit ``bf16`` is honoured on the CPU; on a GPU without bf16 it
    is an error. ``fp16`` needs a GPU: DeepSpeed's CPU accelerator refuses it.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"{key}: unknown precision {requested!r}; allowed: {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if on_gpu and bf16_supported else "fp32"
    if requested == "fp16" and not on_gpu:
        raise ConfigError(
            f"{key}: fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); allowed on the CPU: auto, fp32, bf16"
        )
    if requested == "bf16" and on_gpu and not bf16_supported:
        raise ConfigError(f"{key}: bf16 was asked for but this GPU does not support it; allowed here: auto, fp32, fp16")
    return requested


def student_precision_setting(student_precision: str, run_precision: str) -> tuple[str, str]:
    """The student's requested precision and the key it came from: ``student.precision`` unless that is
    ``auto``, which follows the run's ``precision``."""
    return _stage_precision(student_precision, "student.precision", run_precision)


def guides_precision_setting(guides_precision: str, run_precision: str) -> tuple[str, str]:
    """The teacher actors' requested precision and its key: ``guides.precision`` unless ``auto`` (the run's)."""
    return _stage_precision(guides_precision, "guides.precision", run_precision)


def _stage_precision(own: str, key: str, run_precision: str) -> tuple[str, str]:
    return (own, key) if own != "auto" else (run_precision, "precision")


@dataclass(frozen=True)
class StagePlan:
    """One stage: its device (``cpu``/``cuda``), its precision (``fp32``/``bf16``/``fp16``), the GPUs each of
    its Ray tasks/actors/workers asks for, and the setting its precision came from (named in errors)."""

    device: str
    precision: str
    gpus: float = 0.0
    precision_key: str = "precision"
    requested: str = "auto"

    def as_dict(self) -> dict:
        return asdict(self)

    def place(self) -> tuple[torch.device, str]:
        """The device and precision this process actually uses for the stage: the planned GPU when one is
        visible here (else the CPU), and the requested precision resolved again on it (a GPU without bf16
        turns ``auto`` into fp32)."""
        on_gpu = self.device == "cuda" and torch.cuda.is_available()
        precision = resolve_precision(
            self.requested, self.precision_key, on_gpu, on_gpu and torch.cuda.is_bf16_supported()
        )
        return torch.device("cuda" if on_gpu else "cpu"), precision


@dataclass(frozen=True)
class DevicePlan:
    """Per stage: device, precision and GPUs; the student's worker count (capped at the GPU count);
    ``notes`` say what was changed from the configuration and why (to be logged)."""

    cluster_gpus: float
    teacher_training: StagePlan
    guides: StagePlan
    student: StagePlan
    evaluation: StagePlan
    student_workers: int
    student_min_workers: int  # an elastic pool's least size (``student_workers`` for a fixed pool)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def pool_gpus(plan: DevicePlan, configured: float) -> float:
    """GPUs one teacher actor of a pool asks for: its ``teachers[].num_gpus`` when set, else the plan's share."""
    return configured if configured > 0 else plan.guides.gpus


def _own_teacher_count(cfg: PlanRequest) -> int:
    return max(1, len(own_teacher_refs(cfg.teacher_pool)))


def _check_cpu_only(cfg: PlanRequest, cluster_gpus: float) -> None:
    """GPUs asked for explicitly while the run computes on the CPU: an error, not a silent hang in Ray."""
    why = f"the run computes on the CPU (device: {cfg.device}, the cluster has {cluster_gpus:g} GPUs)"
    if cfg.student.gpus_per_worker > 0:
        raise ConfigError(
            f"student.gpus_per_worker: {cfg.student.gpus_per_worker:g} but {why}; "
            "set it to 0, or device: auto/cuda on a cluster with GPUs"
        )
    for pool in cfg.teacher_pool:
        if pool.num_gpus > 0:
            raise ConfigError(
                f"teachers[{pool.name}].num_gpus: {pool.num_gpus:g} but {why}; "
                "set it to 0, or device: auto/cuda on a cluster with GPUs"
            )


def _floor(share: float) -> float:
    """A GPU share rounded down to 4 decimals: shares that add up must never exceed a GPU by rounding."""
    return math.floor(share * 10_000) / 10_000


def resolve_device(cfg: PlanRequest, cluster_gpus: float) -> DevicePlan:
    """The run's plan on a cluster with ``cluster_gpus`` GPUs (``ray.cluster_resources().get('GPU', 0)``).

    ``device: cuda`` with no GPU is a ``ConfigError`` (raised before any work). With GPUs (``cuda``, or
    ``auto`` and at least one): teacher training tasks take one GPU each (a share when there are more
    teachers than GPUs); each student rank ``STUDENT_GPU_SHARE`` (or ``student.gpus_per_worker``, which must
    then exceed one half), and the student's workers are capped at the GPU count; the teacher actors
    together what one GPU holding a rank leaves free (see the module docstring; a pool with an explicit
    ``teachers[].num_gpus`` keeps it: ``pool_gpus``). Evaluation runs in the driver, on its GPU.
    """
    if cfg.device == "cuda" and cluster_gpus < 1:
        raise ConfigError(
            f"device: cuda was asked for but the Ray cluster has {cluster_gpus:g} GPUs; "
            "use device: auto or cpu (allowed: auto, cpu, cuda)"
        )
    on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and cluster_gpus >= 1)
    dev = "cuda" if on_gpu else "cpu"
    run_precision = resolve_precision(cfg.precision, "precision", on_gpu)
    student, guides = (
        StagePlan(dev, resolve_precision(requested, key, on_gpu), precision_key=key, requested=requested)
        for requested, key in (
            student_precision_setting(cfg.student.precision, cfg.precision),
            guides_precision_setting(cfg.guides.precision, cfg.precision),
        )
    )
    shared = StagePlan(dev, run_precision, requested=cfg.precision)
    if not on_gpu:
        _check_cpu_only(cfg, cluster_gpus)
        return DevicePlan(
            cluster_gpus, shared, guides, student, shared, cfg.student.max_workers, cfg.student.min_workers
        )
    notes = []
    workers = cfg.student.max_workers
    if workers > int(cluster_gpus):
        workers = int(cluster_gpus)
        notes.append(
            f"student.workers: {cfg.student.max_workers} capped at {workers}, the cluster's GPU count "
            "(NCCL allows one rank per GPU)"
        )
    rank_gpus = cfg.student.gpus_per_worker or STUDENT_GPU_SHARE
    if workers > 1 and rank_gpus <= 0.5:
        raise ConfigError(
            f"student.gpus_per_worker: {rank_gpus:g} would let Ray put two student ranks on one "
            "GPU, which NCCL refuses; use more than 0.5, or 0 for the plan's share"
        )
    free = 1 - min(rank_gpus, 1.0)  # what a GPU holding a rank leaves to the teacher actors
    fixed = sum(p.replicas * p.num_gpus for p in cfg.teacher_pool if p.num_gpus > 0)
    planned = sum(p.replicas for p in cfg.teacher_pool if p.num_gpus == 0)
    if fixed > free + 1e-9:
        notes.append(
            f"teachers[].num_gpus ask for {fixed:g} GPUs in all: more than the {free:g} of a GPU a "
            "student rank leaves free, so Ray may keep a rank or an actor waiting"
        )
    actor_gpus = _floor(max(0.0, free - fixed) / planned) if planned else 0.0
    return DevicePlan(
        cluster_gpus,
        teacher_training=replace(shared, gpus=_floor(min(1.0, cluster_gpus / _own_teacher_count(cfg)))),
        guides=replace(guides, gpus=actor_gpus),
        student=replace(student, gpus=rank_gpus),
        evaluation=shared,
        student_workers=workers,
        notes=tuple(notes),
        student_min_workers=min(cfg.student.min_workers, workers),
    )
