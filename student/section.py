"""The student's settings: the run configuration's ``student`` section and its ``finetune`` sub-section (the
distribution-matching phase, ``dm_phase`` in the code), beside the code that reads them.

The section stays flat in YAML (``student.lr``, ``student.objective``, ...); ``student.settings`` groups it as a
worker reads it. The objective's allowed names are the objective registry's (``student.objectives.OBJECTIVES``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from guide_store.settings import Section
from student.objectives import OBJECTIVES
from teachers.settings import NetworkSettings, Precision, TimeSampling, check_custom_resources

__all__ = ["StudentSettings", "DmPhaseSettings", "ObjectiveName"]

if TYPE_CHECKING:  # a Literal built from the registry at import time is no type to mypy: a str to it
    ObjectiveName = str
else:
    ObjectiveName = OBJECTIVES.literal()


class DmPhaseSettings(Section):
    """The student's optional distribution-matching phase (``student.distribution``): its last ``steps`` steps add
    a term that scores the student's own samples with the teacher's velocity field against a fake velocity field
    trained on those samples."""

    steps: int = Field(0, ge=0, description="the last this many of student.steps add the term; 0: no phase")
    weight: float = Field(1.0, gt=0.0, description="the term's weight")
    regression_weight: float = Field(
        0.1, ge=0.0, description="the objective's own loss on the guides, weighed by this in the phase (its anchor)"
    )
    lr: float = Field(4e-6, gt=0.0, le=1.0, description="the student's learning rate in the phase (constant)")
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="the student's EMA decay in the phase")
    fake_lr: float = Field(1e-4, gt=0.0, le=1.0, description="Adam learning rate of the fake velocity field")
    fake_updates: int = Field(3, ge=1, le=100, description="fake velocity field updates per student step")
    t_min: float = Field(0.02, ge=0.0, lt=1.0, description="the term's times are uniform in [t_min, t_max]")
    t_max: float = Field(0.98, gt=0.0, le=1.0)
    real_weight: float = Field(
        0.0,
        ge=0.0,
        description="weight of the real-vs-generated term (student.distribution): a classifier on the fake "
        "field's middle features tells the run's own training images from the student's samples, both noised; "
        "the student is asked to pass as real. 0: no term, no real data read",
    )
    classifier_weight: float = Field(
        1.0, gt=0.0, description="weight of the classifier's loss in each fake-field update (with real_weight)"
    )
    classifier_lr: float = Field(
        1e-4, gt=0.0, le=1.0, description="Adam learning rate of the classifier's head (the fake field's own: fake_lr)"
    )
    sample_steps: list[int] = Field(
        default_factory=lambda: [1],
        description="the student's step counts whose "
        "samples get the term, one drawn per step (the map composed on an equal grid)",
    )

    @model_validator(mode="after")
    def _times(self) -> "DmPhaseSettings":
        if self.t_min >= self.t_max:
            raise ValueError("t_min must be below t_max")
        if not self.sample_steps or any(k < 1 or k > 64 for k in self.sample_steps):
            raise ValueError("sample_steps must be a non-empty list of step counts from 1 to 64")
        return self


class StudentSettings(Section):
    """The student pool (``student.objectives``, ``student.train_loop``): objective, optimisation, DeepSpeed and
    Ray Train settings."""

    network: NetworkSettings | None = Field(None, description="default: the teacher's network")
    init: Literal["teacher", "scratch"] = "teacher"
    objective: ObjectiveName = Field(
        "flow_map", description="flow_map: one- and few-step map (default, docs/method.md); velocity: the paper's"
    )
    time_sampling: TimeSampling = "uniform"
    endpoint_share: float = Field(0.25, ge=0.0, le=1.0, description="flow_map: share of (s, t) = (0, 1) pairs")
    diagonal_share: float = Field(0.1, ge=0.0, le=1.0, description="flow_map: share of s = t pairs")
    grid_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="flow_map: share of (s, t) pairs that are one jump of the samplers' own equal grids (grid_steps)",
    )
    grid_steps: list[int] = Field(
        default_factory=lambda: [2, 4], description="flow_map: the grids of grid_share (n steps: a pair (k/n, (k+1)/n))"
    )
    consistency_weight: float = Field(
        1.0,
        ge=0.0,
        description="flow_map_shortcut / _meanflow / _tri / "
        "_forward: weight of the consistency term (student.objectives)",
    )
    consistency_h: float = Field(
        0.02,
        gt=0.0,
        le=0.5,
        description="flow_map_meanflow / _forward: the small step of the finite-difference derivative along the flow",
    )
    consistency_share: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="flow_map_shortcut / _meanflow / _tri / "
        "_forward: share of each batch's rows that get the consistency term (its "
        "forward passes run on those rows only)",
    )
    steps: int = Field(1000, ge=1, le=100_000_000)
    batch_size: int = Field(64, ge=1, le=1_000_000, description="records per rank per step")
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, gt=0.0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    max_reuse: float = Field(16.0, gt=0.0, description="average uses per record before a rank waits for fresh guides")
    replay_records: int = Field(50_000, ge=1, description="records each rank keeps for reuse")
    prefetch: int = Field(
        0,
        ge=0,
        le=64,
        description="deliveries each rank reads ahead in a background thread, so "
        "store reads and decoding overlap its steps (for a GPU rank whose step is short next to a "
        "read); a rank then holds up to this many beyond the one it trains on, so a small run's "
        "blocks may all go to the first rank up. 0 (default): read in the step",
    )
    workers: int | tuple[int, int] = Field(
        2,
        description="DeepSpeed ranks; [min, max] for an elastic pool that goes on with at least min when a "
        "node is lost and grows back to max when it returns (ZeRO 0 or 1, the guide store as source)",
    )
    resize_check_s: float = Field(
        60.0,
        gt=0.0,
        description="how often an elastic pool looks for room to grow (Ray Train's elastic_resize_monitor_interval_s)",
    )
    cpus_per_worker: float = Field(1.0, ge=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources each worker asks for ({name: amount}): placement on nodes that offer them",
    )
    threads: int = Field(1, ge=1, le=256, description="torch threads per worker on CPU")
    zero_stage: int = Field(1, ge=0, le=2)
    precision: Precision = Field(
        "auto", description="auto: the run's precision; fp32, bf16 or fp16 overrides it for the student only"
    )
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, le=1000)
    log_every: int = Field(25, ge=1)
    source: Literal["store", "parquet"] = "store"
    parquet_dir: str | None = Field(None, description="an exported guide directory (source: parquet)")
    guide_timeout_s: float = Field(600.0, gt=0.0, description="longest a rank waits for guides before failing")
    eval_steps: list[int] = Field(default_factory=lambda: [1, 2, 4])
    dm_phase: DmPhaseSettings = Field(DmPhaseSettings(), alias="finetune")
    storage_path: str | None = Field(None, description="Ray Train storage (shared by all nodes); default RUN/train")

    @field_validator("resources_per_worker")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(v)

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        low, high = (v, v) if isinstance(v, int) else v
        if not 1 <= low <= high <= 4096:
            raise ValueError(f"must be a count from 1 to 4096, or [min, max] with 1 <= min <= max; got {v!r}")
        return v

    @property
    def elastic(self) -> bool:
        """Whether the pool is elastic (``workers: [min, max]`` with min < max)."""
        return not isinstance(self.workers, int) and self.workers[0] < self.workers[1]

    @property
    def min_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[0]

    @property
    def max_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[1]

    @model_validator(mode="after")
    def _source_needs_dir(self) -> "StudentSettings":
        if self.elastic and self.zero_stage not in (0, 1):
            raise ValueError(
                f"workers {[self.min_workers, self.max_workers]} (an elastic pool) needs zero_stage 0 or 1: ZeRO "
                f"{self.zero_stage} optimizer state does not reshard to another world size"
            )
        if self.elastic and self.source != "store":
            raise ValueError(
                f"workers {[self.min_workers, self.max_workers]} (an elastic pool) needs source 'store': a rank's "
                "share of Parquet files depends on the world size"
            )
        if self.source == "parquet" and not self.parquet_dir:
            raise ValueError("source 'parquet' needs parquet_dir (a directory from: bezier-distill store export)")
        if self.endpoint_share + self.diagonal_share + self.grid_share > 1.0:
            raise ValueError("endpoint_share + diagonal_share + grid_share must be at most 1")
        for key in ("grid_steps", "eval_steps"):
            if not getattr(self, key) or any(k < 1 for k in getattr(self, key)):
                raise ValueError(f"{key} must be a non-empty list of step counts >= 1")
        if self.dm_phase.steps > self.steps:
            raise ValueError(
                f"finetune.steps ({self.dm_phase.steps}) must be at most steps ({self.steps}): the "
                "phase is the last finetune.steps of them; lower it, or set student.finetune.steps=0 "
                "for no phase"
            )
        if self.dm_phase.steps and self.init != "teacher":
            raise ValueError(
                "finetune.steps needs init 'teacher': the phase runs the student's first teacher, "
                "frozen, inside each worker; set student.finetune.steps=0 for no phase"
            )
        return self
