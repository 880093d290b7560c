"""What a student worker is handed: one frozen ``StudentJob``, built on the driver, unpacked once at the top of
the worker.

The YAML's ``student`` section stays flat (``student.lr``, ``student.objective``, ...: ``--set`` overrides, study
files and the ``training`` section of existing checkpoints keep working); here it is grouped as a reader thinks
of it:

- ``objective``: which loss, and how its times are drawn (``student.objectives.ObjectiveSettings``);
- ``optim``: steps, batch, learning rate and its warm-up, clipping, EMA, ZeRO stage (``OptimSettings``);
- ``feed``: where guides come from and how often a record may be reused (``FeedSettings``);
- ``saving``: how often to log and checkpoint, how many checkpoints to keep (``SavingSettings``);
- ``dm_phase``: the distribution-matching phase (YAML ``student.finetune``; ``student.section.DmPhaseSettings``).

The pool's shape (workers, CPUs/GPUs each, retries, storage) is the driver's concern
(``cluster.student_pool``) and stays there. Ray carries the object to the workers (``TorchTrainer`` wants a
dict, so it travels as ``{"job": StudentJob}``); the step check's separate process reads it as JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter

from student.fault_hooks import KILL_ENV
from guide_store.settings import StoreSettings
from student.objectives import ObjectiveSettings
from student.section import DmPhaseSettings, StudentSettings
from teachers.device_plan import student_precision_setting
from teachers.conventions import DEFAULT_CONVENTION
from teachers.ensemble import TeacherSpec
from teachers.settings import DataSettings, GuidesSettings, NetworkSettings, TeacherTrainingSettings
from teachers.schedule import lr_at

__all__ = [
    "OptimSettings",
    "FeedSettings",
    "SavingSettings",
    "StudentRun",
    "StudentJob",
    "TRAIN_LOOP_KEY",
]

TRAIN_LOOP_KEY = "job"  # the one key of the dict ``TorchTrainer`` hands each worker


@dataclass(frozen=True)
class OptimSettings:
    """``steps`` optimizer steps of ``batch_size`` records per rank; Adam at ``lr`` with a linear warm-up
    and cosine decay (``lr_at``), gradients clipped at ``grad_clip``, an EMA copy with ``ema_decay``."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    grad_clip: float
    ema_decay: float
    zero_stage: int

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.lr, self.warmup_steps, self.steps)


@dataclass(frozen=True)
class FeedSettings:
    """Where a rank's guides come from: the run's store (``store_url``; ``num_samples`` records in all) or
    an exported Parquet directory; a rank waits for fresh records once it has used its pool of
    ``replay_records`` ``max_reuse`` times on average, and fails after ``guide_timeout_s`` without any;
    ``prefetch`` deliveries are read ahead in a background thread (0: read in the step)."""

    source: str
    parquet_dir: str | None
    store_url: str | None
    store: StoreSettings
    num_samples: int
    max_reuse: float
    replay_records: int
    guide_timeout_s: float
    prefetch: int = 0


@dataclass(frozen=True)
class SavingSettings:
    """A metrics line every ``log_every`` steps, a checkpoint every ``checkpoint_every``."""

    log_every: int
    checkpoint_every: int


class StudentRun(Protocol):
    """What a student worker is built from: the run's name, seed and ``precision``, its ``student``,
    ``guides`` and ``store`` sections, the teacher's network (the student's default), the data's name, the teacher
    pools (the first one's convention reads a diffusers first teacher) and where the run's folder is."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def precision(self) -> str: ...

    @property
    def student(self) -> StudentSettings: ...

    @property
    def guides(self) -> GuidesSettings: ...

    @property
    def store(self) -> StoreSettings: ...

    @property
    def teacher_training(self) -> TeacherTrainingSettings: ...

    @property
    def data(self) -> DataSettings: ...

    @property
    def run_path(self) -> Path: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]:
        """The configuration as plain data, keyed as in YAML (the exported student's ``training``)."""


def _test_kills() -> tuple[str, ...]:
    return tuple(m for m in os.environ.get(KILL_ENV, "").split(",") if m)


@dataclass(frozen=True)
class StudentJob:
    """Everything a student worker (or the one-step check) needs.

    ``record`` is the run's configuration as plain data, keyed as in YAML, with the store password masked: the
    exported student records it in its ``model.json`` (``training``), from which ``bezier-distill eval``
    rebuilds the data and the evaluation settings. The password travels only in ``feed.store_url``, to what
    opens the store. ``precision`` is the student's requested precision and the key it came from
    (``teachers.device_plan.student_precision_setting``); each worker resolves it on its own device."""

    run: str
    seed: int
    network: NetworkSettings
    data_shape: tuple[int, ...]
    init_checkpoint: str | None
    path: str
    threads: int
    objective: ObjectiveSettings
    optim: OptimSettings
    feed: FeedSettings
    saving: SavingSettings
    record: dict[str, Any]
    run_path: str
    data_name: str
    precision: tuple[str, str]
    dm_phase: DmPhaseSettings = DmPhaseSettings()
    # the distribution-matching phase's frozen teacher: the run's first teacher (an ensemble: all its members)
    dm_teacher: TeacherSpec | None = None
    # how init_checkpoint and dm_teacher read as v(x, t) when they are diffusers folders: the first pool's
    convention: str = DEFAULT_CONVENTION
    # the run's data section when the phase's real-vs-generated term is on (its real side: the training split)
    real_data: DataSettings | None = None
    device: str = "cpu"  # the step check's device; Ray Train places the workers itself
    # test-only (``student.fault_hooks``): the moments a rank kills itself at, from the driver's environment
    test_kills: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        cfg: StudentRun,
        store_url: str | None,
        data_shape: tuple[int, ...],
        teacher: TeacherSpec | None,
        device: str = "cpu",
    ) -> "StudentJob":
        """The job of ``cfg``'s student; ``teacher``: the run's first teacher when the student starts from it
        (``student.init: teacher``): its first checkpoint is copied, and the phase runs it whole."""
        sc = cfg.student
        return cls(
            run=cfg.name,
            seed=cfg.seed,
            network=sc.network or cfg.teacher_training.network,
            data_shape=tuple(int(d) for d in data_shape),
            init_checkpoint=teacher.first if teacher is not None else None,
            path=cfg.guides.path,
            threads=sc.threads,
            objective=ObjectiveSettings(
                sc.objective,
                sc.time_sampling,
                sc.endpoint_share,
                sc.diagonal_share,
                sc.consistency_weight,
                sc.grid_share,
                tuple(sc.grid_steps),
                sc.consistency_h,
                sc.consistency_share,
            ),
            optim=OptimSettings(
                sc.steps, sc.batch_size, sc.lr, sc.warmup_steps, sc.grad_clip, sc.ema_decay, sc.zero_stage
            ),
            feed=FeedSettings(
                sc.source,
                sc.parquet_dir,
                store_url,
                cfg.store,
                cfg.guides.num_samples,
                sc.max_reuse,
                sc.replay_records,
                sc.guide_timeout_s,
                sc.prefetch,
            ),
            saving=SavingSettings(sc.log_every, sc.checkpoint_every),
            record=cfg.model_dump(mode="json"),
            run_path=str(cfg.run_path),
            data_name=cfg.data.name,
            precision=student_precision_setting(sc.precision, cfg.precision),
            device=device,
            dm_phase=sc.dm_phase,
            dm_teacher=teacher if sc.dm_phase.steps else None,
            convention=teacher.convention if teacher is not None else DEFAULT_CONVENTION,
            real_data=cfg.data if sc.dm_phase.steps and sc.dm_phase.real_weight > 0 else None,
            test_kills=_test_kills(),
        )

    def in_dm_phase(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is in the distribution-matching phase: the last ``dm_phase.steps``."""
        return self.dm_phase.steps > 0 and step >= self.optim.steps - self.dm_phase.steps

    def lr_at(self, step: int) -> float:
        """The student's learning rate at step ``step``: the phase's constant one in it, else the schedule's."""
        return self.dm_phase.lr if self.in_dm_phase(step) else self.optim.lr_at(step)

    def to_json(self) -> str:
        """The job as JSON, for a process started outside Ray (the step check reads it on stdin)."""
        return _JOB.dump_json(self).decode()

    @classmethod
    def from_json(cls, text: str) -> "StudentJob":
        """The job ``to_json`` wrote, with the test-only kill moments of this process's environment."""
        return replace(_JOB.validate_json(text), test_kills=_test_kills())


_JOB = TypeAdapter(StudentJob)
