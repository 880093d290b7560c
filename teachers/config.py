"""The run configuration's schema: one set of typed classes, validated before any work.

YAML files in ``configs/`` load into ``RunConfig`` (``cluster.config.load_config`` reads the file and makes
its paths absolute; everything else is here, in the lowest package that reads a configuration). An unknown
key, a wrong type or an out-of-range value raises ``ConfigError`` whose message names the dotted key, what
is allowed, and what was given. ``--set a.b=value`` overrides are applied to the raw mapping before
validation, so they are checked the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guide_store.errors import BezierDistillError
from guide_store.embedded import FSYNC_POLICIES
from guide_store.schema import TENSOR_DTYPES
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION
from teachers.data import DATA_SOURCES
from teachers.digits_features import FEATURE_EXTRACTORS
from teachers.fid_bootstrap import FID_RESAMPLES
from teachers.guides import COUPLINGS, GUIDE_RULES, PATHS, CouplingSettings, from_coupling
from teachers.nets import ARCHITECTURES
from teachers.precision import PRECISIONS
from teachers.rectified_flow import TIME_SAMPLERS
from teachers.solvers import SOLVERS

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "NetworkConfig",
    "TeacherConfig",
    "EvalConfig",
    "StoreConfig",
    "GuidesConfig",
    "TeacherPoolConfig",
    "StudentConfig",
    "Section",
    "parse_config",
    "apply_overrides",
    "format_errors",
    "redact_url",
    "public_config",
    "dump_config",
    "Precision",
    "Device",
    "PRECISIONS",
    "DEVICES",
    "Objective",
    "OBJECTIVE_NAMES",
    "Solver",
    "FinetuneConfig",
]

# each choice's allowed values come from the registry that implements it (teachers.registry); the student's
# objectives are implemented a layer up (student.objectives.OBJECTIVES), so their names are declared here and
# tests/test_registries.py ties the two
Solver = SOLVERS.literal()
TimeSampling = TIME_SAMPLERS.literal()
DataName = DATA_SOURCES.literal()
Architecture = ARCHITECTURES.literal()
FeatureExtractor = FEATURE_EXTRACTORS.literal()
PathName = PATHS.literal()
GuideRule = GUIDE_RULES.literal()
Coupling = COUPLINGS.literal()
Convention = CONVENTIONS.literal()
OBJECTIVE_NAMES: tuple[str, ...] = (
    "velocity",
    "flow_map",
    "flow_map_shortcut",
    "flow_map_meanflow",
    "flow_map_tri",
    "flow_map_forward",
)
Objective = Literal[OBJECTIVE_NAMES]
# the allowed values of the run's ``precision``/``student.precision`` and ``device`` settings, declared once
Precision = Literal[PRECISIONS]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
Device = Literal[DEVICES]
StoreDtype = Literal[tuple(TENSOR_DTYPES)]
Fsync = Literal[FSYNC_POLICIES]


class ConfigError(BezierDistillError, ValueError):
    """A configuration is invalid; the message names each bad key."""


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    name: DataName
    path: str | None = None
    key: str | None = None
    shape: list[int] | None = Field(None, description="per-sample shape of file data, e.g. [1, 8, 8]")
    n_train: int = Field(20000, ge=1, le=10_000_000)
    n_held_out: int = Field(2000, ge=1, le=1_000_000)
    held_out_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="seed of the train/held-out split "
        "(default: the run's seed); a second teacher of a run keeps the run's split",
    )

    def split_seed_for(self, run_seed: int) -> int:
        return run_seed if self.split_seed is None else self.split_seed


class NetworkConfig(Section):
    arch: Architecture
    hidden: int = Field(256, ge=8, le=8192)
    depth: int = Field(3, ge=1, le=32)
    channels: int = Field(32, ge=8, le=1024)
    time_embed_dim: int = Field(64, ge=8, le=4096, multiple_of=2)

    def kwargs(self) -> dict[str, int]:
        """Constructor arguments for ``teachers.nets.build_network``."""
        if self.arch == "mlp":
            return {"hidden": self.hidden, "depth": self.depth, "time_embed_dim": self.time_embed_dim}
        return {"channels": self.channels, "time_embed_dim": self.time_embed_dim}


class TeacherConfig(Section):
    network: NetworkConfig
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(256, ge=1, le=65536)
    time_sampling: TimeSampling = "uniform"
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    warmup_steps: int = Field(100, ge=0)
    log_every: int = Field(100, ge=1)
    reflow_rounds: int = Field(0, ge=0, le=8, description="0 gives a 1-rectified flow")
    reflow_pairs: int = Field(20000, ge=1)
    reflow_solver: Solver = "rk4"
    reflow_solver_steps: int = Field(32, ge=1, le=10000)
    reflow_steps: int | None = Field(None, ge=1, description="training steps per reflow round (default: steps)")


class EvalConfig(Section):
    steps: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 32])
    solver: Solver = "euler"
    reference_solver: Solver | None = Field(
        "rk4",
        description="the teacher also evaluated with this solver at "
        "reference_steps (adaptive: its own steps), so the report can say how "
        "close the student came to the teacher's best; null: not",
    )
    reference_steps: int = Field(32, ge=1)
    n_samples: int = Field(2000, ge=16, le=1_000_000)
    feature_extractor: FeatureExtractor = "digits-classifier"
    kid_subset_size: int = Field(200, ge=2)
    slices: int = Field(256, ge=1, le=100_000)
    fid_resamples: int = Field(
        FID_RESAMPLES,
        ge=0,
        le=100_000,
        description="bootstrap resamples of each FID's 95% interval (fid_interval; "
        "teachers.fid_bootstrap); 0: no intervals",
    )

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, v: list[int]) -> list[int]:
        if not v or any(s < 1 for s in v):
            raise ValueError("must be a non-empty list of step counts >= 1")
        return v


class StoreConfig(Section):
    url: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix)://",
        description="redis://[user:password@]host:port/db; unset: a private embedded server",
    )
    dtype: StoreDtype = "float32"
    max_backlog_records: int = Field(200_000, ge=1)
    max_backlog_bytes: int = Field(2 << 30, ge=1 << 20)
    claim_idle_s: float = Field(
        30.0,
        gt=0.0,
        description="ignored since ranks get their own pending records "
        "back when they restart; kept so older configs and checkpoints still load",
    )
    put_timeout_s: float = Field(600.0, gt=0.0)
    fsync: Fsync = "always"
    max_memory_bytes: int = Field(
        4 << 30,
        ge=16 << 20,
        description="the embedded server's memory cap (noeviction: "
        "a write past it fails, nothing is dropped); at least twice max_backlog_bytes",
    )

    @model_validator(mode="after")
    def _backlog_well_below_memory(self) -> "StoreConfig":
        if self.url is None and 2 * self.max_backlog_bytes > self.max_memory_bytes:
            raise ValueError(
                f"max_backlog_bytes ({self.max_backlog_bytes}) must be at most half of max_memory_bytes "
                f"({self.max_memory_bytes}), so acknowledgements and dead letters always have room"
            )
        return self


class GuidesConfig(Section):
    """What the teachers produce (``teachers.guides``)."""

    path: PathName = "cubic"
    rule: GuideRule = "euler_step"
    taus: list[float] | None = Field(None, description="guide times; default 1/3, 2/3 (cubic) or 1/2 (quadratic)")
    solve_solver: Solver = "euler"
    solve_steps: int = Field(4, ge=1, le=10000)
    coupling: Coupling = "inversion"
    coupling_solver: Solver = "rk4"
    coupling_steps: int = Field(32, ge=1, le=10000)
    inversion_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="coupling mixed: the share of records paired by inversion (real end points), the rest generated",
    )
    block_size: int = Field(64, ge=1, le=1_000_000)
    num_samples: int = Field(20000, ge=1)
    precision: Precision = Field(
        "auto",
        description="auto: the run's precision; fp32, bf16 or fp16 overrides it "
        "for the teacher actors' guide production only",
    )

    @property
    def n_guides(self) -> int:
        return PATHS[self.path]

    def coupling_settings(self) -> CouplingSettings:
        return CouplingSettings(self.coupling, self.coupling_solver, self.coupling_steps, self.inversion_share)

    def guide_times(self) -> list[float]:
        if self.taus is not None:
            return list(self.taus)
        return {0: [], 1: [0.5], 2: [1 / 3, 2 / 3]}[self.n_guides]

    @field_validator("taus")
    @classmethod
    def _taus_in_range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not 0.0 < t < 1.0 for t in v):
            raise ValueError("guide times must lie strictly between 0 and 1")
        return v


def check_custom_resources(resources: dict[str, float]) -> dict[str, float]:
    """Custom resources for placement: names other than Ray's own CPU/GPU/memory (those have their own keys),
    amounts > 0."""
    for name, amount in resources.items():
        if name in ("CPU", "GPU", "memory", "object_store_memory") or not name.strip():
            raise ValueError(
                f"resource {name!r}: CPUs and GPUs have their own keys (num_cpus/num_gpus, "
                f"cpus_per_worker/gpus_per_worker); name a custom resource a node offers "
                f"(ray start --resources='{{\"teacher_host\": 4}}')"
            )
        if not amount > 0:
            raise ValueError(f"resource {name!r}: the amount must be > 0, got {amount}")
    return resources


class TeacherPoolConfig(Section):
    """One kind of teacher actor: which checkpoints make which guides, how many replicas, what resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    checkpoints: list[str] = Field(
        min_length=1, description="one per guide (the first also couples); a single entry serves every guide"
    )
    replicas: int = Field(1, ge=0, le=1024)
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources each actor asks "
        "for ({name: amount}): it runs only on nodes that offer them (placement)",
    )
    threads: int = Field(1, ge=1, le=256)
    convention: Convention = Field(
        DEFAULT_CONVENTION,
        description="how a diffusers checkpoint's time and output "
        "read as v(x, t) (teachers.conventions); native checkpoints ignore it",
    )

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(v)

    def guide_checkpoints(self, n_guides: int) -> list[str]:
        """The checkpoint that makes each guide: one per guide, or the single entry for all of them."""
        return (self.checkpoints if len(self.checkpoints) > 1 else self.checkpoints * n_guides)[:n_guides]

    def guides_from_coupling(self, guides: GuidesConfig) -> list[bool]:
        """Which guides this pool takes from its coupling solve for free (``teachers.guides.from_coupling``)."""
        own = [c == self.checkpoints[0] for c in self.guide_checkpoints(guides.n_guides)]
        return from_coupling(guides.coupling_settings(), guides.rule, guides.guide_times(), own)


class FinetuneConfig(Section):
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
    sample_steps: list[int] = Field(
        default_factory=lambda: [1],
        description="the student's step counts whose "
        "samples get the term, one drawn per step (the map composed on an equal grid)",
    )

    @model_validator(mode="after")
    def _times(self) -> "FinetuneConfig":
        if self.t_min >= self.t_max:
            raise ValueError("t_min must be below t_max")
        if not self.sample_steps or any(k < 1 or k > 64 for k in self.sample_steps):
            raise ValueError("sample_steps must be a non-empty list of step counts from 1 to 64")
        return self


class StudentConfig(Section):
    """The student pool (``student.objectives``, ``student.train_loop``): objective, optimisation, DeepSpeed and
    Ray Train settings."""

    network: NetworkConfig | None = Field(None, description="default: the teacher's network")
    init: Literal["teacher", "scratch"] = "teacher"
    objective: Objective = Field(
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
    finetune: FinetuneConfig = FinetuneConfig()
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
    def _source_needs_dir(self) -> "StudentConfig":
        if self.elastic and self.zero_stage not in (0, 1):
            raise ValueError(
                f"workers {list(self.workers)} (an elastic pool) needs zero_stage 0 or 1: ZeRO "
                f"{self.zero_stage} optimizer state does not reshard to another world size"
            )
        if self.elastic and self.source != "store":
            raise ValueError(
                f"workers {list(self.workers)} (an elastic pool) needs source 'store': a rank's share "
                "of Parquet files depends on the world size"
            )
        if self.source == "parquet" and not self.parquet_dir:
            raise ValueError("source 'parquet' needs parquet_dir (a directory from: bezier-distill store export)")
        if self.endpoint_share + self.diagonal_share + self.grid_share > 1.0:
            raise ValueError("endpoint_share + diagonal_share + grid_share must be at most 1")
        for key in ("grid_steps", "eval_steps"):
            if not getattr(self, key) or any(k < 1 for k in getattr(self, key)):
                raise ValueError(f"{key} must be a non-empty list of step counts >= 1")
        if self.finetune.steps > self.steps:
            raise ValueError(
                f"finetune.steps ({self.finetune.steps}) must be at most steps ({self.steps}): the "
                "phase is the last finetune.steps of them; lower it, or set student.finetune.steps=0 "
                "for no phase"
            )
        if self.finetune.steps and self.init != "teacher":
            raise ValueError(
                "finetune.steps needs init 'teacher': the phase runs the student's first teacher, "
                "frozen, inside each worker; set student.finetune.steps=0 for no phase"
            )
        return self


class RunConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    run_dir: str = "runs"
    data: DataConfig
    teacher: TeacherConfig
    eval: EvalConfig = EvalConfig()
    store: StoreConfig = StoreConfig()
    guides: GuidesConfig = GuidesConfig()
    teachers: list[TeacherPoolConfig] = Field(default_factory=list)
    student: StudentConfig = StudentConfig()
    namespace: str = Field("bezier-distill", pattern=r"^[A-Za-z0-9_.-]+$")
    max_restarts: int = Field(3, ge=0, le=1000)
    device: Device = Field(
        "auto",
        description="auto: the cluster's GPUs when it has any, else the CPU; "
        "applies to teacher training, guide production, the student and evaluation",
    )
    precision: Precision = Field(
        "auto",
        description="auto: bf16 on GPUs that support it, fp32 on the CPU; "
        "bf16 also trains on the CPU; fp16 needs a GPU",
    )

    @model_validator(mode="after")
    def _guides_match_teachers(self) -> "RunConfig":
        k = self.guides.n_guides
        if self.guides.taus is not None and len(self.guides.taus) != k:
            raise ValueError(f"guides.taus has {len(self.guides.taus)} entries; path {self.guides.path!r} needs {k}")
        for pool in self.teachers:
            if len(pool.checkpoints) not in (1, max(k, 1)):
                raise ValueError(
                    f"teachers[{pool.name}].checkpoints has {len(pool.checkpoints)} entries; "
                    f"path {self.guides.path!r} needs 1 or {max(k, 1)}"
                )
        blocks = -(-self.guides.num_samples // self.guides.block_size)
        if self.student.source == "store" and blocks < self.student.max_workers:
            raise ValueError(
                f"guides.num_samples / guides.block_size gives {blocks} block(s) for "
                f"{self.student.max_workers} student workers; every worker needs at least one"
            )
        return self

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir) / self.name

    @property
    def teacher_path(self) -> Path:
        return self.run_path / "teacher"

    @property
    def student_path(self) -> Path:
        """The exported student (``model.safetensors`` + ``model.json``), usable without DeepSpeed."""
        return self.run_path / "student"

    @property
    def redis_path(self) -> Path:
        """Data directory of the run's embedded Redis (when ``store.url`` is unset)."""
        return self.run_path / "redis"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars/lists) to a nested mapping."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. teacher.lr=3e-4")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty part in key {key!r}")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text)
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the section at ``loc`` (the location of an unknown key)."""
    for part in loc[:-1]:
        if not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        candidates = get_args(ann) if get_origin(ann) is Union else (ann,)
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return sorted(model.model_fields)


def format_errors(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line per error: the dotted key, then what is allowed (an unknown key lists the known ones)."""
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model or RunConfig, tuple(e["loc"]))
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed or [])}")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: Any, source: str = "<mapping>") -> RunConfig:
    """Validate a plain mapping into a ``RunConfig`` or raise ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def redact_url(url: str | None) -> str | None:
    """A store URL without its password (``redis://user:***@host:port/db``), for logs and files."""
    if not url or "@" not in url.split("://", 1)[-1]:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0] if ":" in cred else ""
    return f"{scheme}://{user}:***@{host}"


def public_config(cfg: RunConfig) -> RunConfig:
    """The configuration with ``store.url``'s password masked: what goes into files, reports and the
    settings handed to actors (the URL itself travels separately, to what opens the store)."""
    return cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": redact_url(cfg.store.url)})})


def dump_config(cfg: RunConfig) -> str:
    """The resolved configuration as YAML (what a run records in its folder), password masked."""
    return yaml.safe_dump(public_config(cfg).model_dump(mode="json"), sort_keys=False)
