"""What a student worker is handed: one frozen ``StudentJob``, built on the driver, unpacked once at the top of
the worker.

The YAML's ``student`` section stays flat (``student.lr``, ``student.objective``, ...: ``--set`` overrides, study
files and the ``training`` section of existing checkpoints keep working); here it is grouped as a reader thinks
of it:

- ``objective``: which loss, and how its times are drawn (``ObjectiveSettings``);
- ``optim``: steps, batch, learning rate and its warm-up, clipping, EMA, ZeRO stage (``OptimSettings``);
- ``feed``: where guides come from and how often a record may be reused (``FeedSettings``);
- ``saving``: how often to log and checkpoint, how many checkpoints to keep (``SavingSettings``).

The pool's shape (workers, CPUs/GPUs each, retries, storage) is the driver's concern
(``cluster.student_pool``) and stays there. Ray carries the object to the workers (``TorchTrainer`` wants a
dict, so it travels as ``{"job": StudentJob}``); the step check's separate process reads it as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from student.fault_hooks import KILL_ENV
from teachers.config import NetworkConfig, RunConfig, StoreConfig, parse_config
from teachers.schedule import lr_at

__all__ = [
    "ObjectiveSettings",
    "OptimSettings",
    "FeedSettings",
    "FinetuneSettings",
    "SavingSettings",
    "StudentJob",
    "TRAIN_LOOP_KEY",
]

TRAIN_LOOP_KEY = "job"  # the one key of the dict ``TorchTrainer`` hands each worker


@dataclass(frozen=True)
class ObjectiveSettings:
    """The student's objective (``student.objectives.OBJECTIVES``) and how its times are drawn:
    ``time_sampling`` names the density of ``t`` (and of ``s, t`` before sorting); ``endpoint_share`` of
    flow-map pairs are ``(0, 1)``, ``diagonal_share`` have ``s = t``, ``grid_share`` are one jump
    ``(k/n, (k+1)/n)`` of an equal grid of ``n`` in ``grid_steps`` steps (what the few-step samplers take);
    ``consistency_weight`` weighs the consistency terms (shortcut, meanflow, tri, forward), ``consistency_h`` is
    the meanflow and forward terms' small step; ``consistency_share`` of each batch's rows get the term (the
    first ``ceil(share x B)``: a random subset, since every row's times are drawn independently)."""

    objective: str = "flow_map"
    time_sampling: str = "uniform"
    endpoint_share: float = 0.25
    diagonal_share: float = 0.1
    consistency_weight: float = 1.0
    grid_share: float = 0.0
    grid_steps: tuple[int, ...] = (2, 4)
    consistency_h: float = 0.02
    consistency_share: float = 1.0


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
    store: StoreConfig
    num_samples: int
    max_reuse: float
    replay_records: int
    guide_timeout_s: float
    prefetch: int = 0


@dataclass(frozen=True)
class FinetuneSettings:
    """The distribution-matching phase (``student.distribution``): the last ``steps`` steps add ``weight`` x the
    term on samples of ``sample_steps`` steps, with times uniform in ``[t_min, t_max]``, keep the objective's own
    loss at ``regression_weight``, and train at the constant ``lr`` with EMA decay ``ema_decay``; the fake
    velocity field takes ``fake_updates`` Adam steps at ``fake_lr`` per student step. ``teacher``: the frozen
    teacher's checkpoint (the student's first teacher)."""

    steps: int = 0
    weight: float = 1.0
    regression_weight: float = 0.1
    lr: float = 4e-6
    ema_decay: float = 0.99
    fake_lr: float = 1e-4
    fake_updates: int = 3
    t_min: float = 0.02
    t_max: float = 0.98
    sample_steps: tuple[int, ...] = (1,)
    teacher: str | None = None


@dataclass(frozen=True)
class SavingSettings:
    """A metrics line every ``log_every`` steps, a checkpoint every ``checkpoint_every``."""

    log_every: int
    checkpoint_every: int


@dataclass(frozen=True)
class StudentJob:
    """Everything a student worker (or the one-step check) needs.

    ``config`` is the run's configuration with the store password masked: the exported student records it
    in its ``model.json`` (``training``), from which ``bezier-distill eval`` rebuilds the data and the
    evaluation settings. The password travels only in ``feed.store_url``, to what opens the store."""

    run: str
    seed: int
    network: NetworkConfig
    data_shape: tuple[int, ...]
    init_checkpoint: str | None
    path: str
    threads: int
    objective: ObjectiveSettings
    optim: OptimSettings
    feed: FeedSettings
    saving: SavingSettings
    config: RunConfig
    finetune: FinetuneSettings = FinetuneSettings()
    device: str = "cpu"  # the step check's device; Ray Train places the workers itself
    # test-only (``student.fault_hooks``): the moments a rank kills itself at, from the driver's environment
    test_kills: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        cfg: RunConfig,
        store_url: str | None,
        data_shape: tuple[int, ...],
        init_checkpoint: str | None,
        device: str = "cpu",
    ) -> "StudentJob":
        sc, ft = cfg.student, cfg.student.finetune
        return cls(
            run=cfg.name,
            seed=cfg.seed,
            network=sc.network or cfg.teacher.network,
            data_shape=tuple(int(d) for d in data_shape),
            init_checkpoint=init_checkpoint,
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
            config=cfg,
            device=device,
            finetune=FinetuneSettings(
                ft.steps,
                ft.weight,
                ft.regression_weight,
                ft.lr,
                ft.ema_decay,
                ft.fake_lr,
                ft.fake_updates,
                ft.t_min,
                ft.t_max,
                tuple(ft.sample_steps),
                init_checkpoint if ft.steps else None,
            ),
            test_kills=tuple(m for m in os.environ.get(KILL_ENV, "").split(",") if m),
        )

    def in_finetune(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is in the distribution-matching phase: the last ``finetune.steps``."""
        return self.finetune.steps > 0 and step >= self.optim.steps - self.finetune.steps

    def lr_at(self, step: int) -> float:
        """The student's learning rate at step ``step``: the phase's constant one in it, else the schedule's."""
        return self.finetune.lr if self.in_finetune(step) else self.optim.lr_at(step)

    def to_json(self) -> str:
        """The job as JSON, for a process started outside Ray (the step check reads it on stdin)."""
        return json.dumps(
            {
                "config": self.config.model_dump(mode="json"),
                "store_url": self.feed.store_url,
                "data_shape": list(self.data_shape),
                "init_checkpoint": self.init_checkpoint,
                "device": self.device,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "StudentJob":
        d = json.loads(text)
        return cls.of(
            parse_config(d["config"], "student job"),
            d["store_url"],
            tuple(d["data_shape"]),
            d["init_checkpoint"],
            d["device"],
        )
