"""The teachers' settings: the run configuration's ``data``, ``teacher`` (teacher training), ``eval``, ``guides``
and ``teachers`` (the teacher-actor pool) sections, beside the code that reads them.

``cluster.config`` assembles the run configuration from these, the store's (``guide_store.settings``) and the
student's (``student.section``). Each choice's allowed values come from the registry that implements it
(``teachers.registry``), so the schema and the implementation cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from guide_store.settings import Section
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION
from teachers.data import DATA_SOURCES
from teachers.digits_features import FEATURE_EXTRACTORS
from teachers.ensemble import TeacherSpec
from teachers.fid_bootstrap import FID_RESAMPLES
from teachers.guides import COUPLINGS, GUIDE_RULES, PATHS, CouplingSettings, from_coupling
from teachers.nets import ARCHITECTURES
from teachers.precision import PRECISIONS
from teachers.rectified_flow import TIME_SAMPLERS
from teachers.solvers import SOLVERS

__all__ = [
    "DataSettings",
    "NetworkSettings",
    "TeacherTrainingSettings",
    "EvalSettings",
    "GuidesSettings",
    "TeacherPoolSettings",
    "with_default_pool",
    "check_custom_resources",
    "Solver",
    "TimeSampling",
    "Precision",
    "Device",
    "PRECISIONS",
    "DEVICES",
]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
if TYPE_CHECKING:  # a Literal built from a registry at import time is no type to mypy: each choice is a str to it
    Solver = str
    TimeSampling = str
    DataName = str
    Architecture = str
    FeatureExtractor = str
    PathName = str
    GuideRule = str
    Coupling = str
    Convention = str
    Precision = str
    Device = str
else:
    Solver = SOLVERS.literal()
    TimeSampling = TIME_SAMPLERS.literal()
    DataName = DATA_SOURCES.literal()
    Architecture = ARCHITECTURES.literal()
    FeatureExtractor = FEATURE_EXTRACTORS.literal()
    PathName = PATHS.literal()
    GuideRule = GUIDE_RULES.literal()
    Coupling = COUPLINGS.literal()
    Convention = CONVENTIONS.literal()
    # the allowed values of the run's ``precision``/``student.precision`` and ``device`` settings, declared once
    Precision = Literal[PRECISIONS]
    Device = Literal[DEVICES]


class DataSettings(Section):
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


class NetworkSettings(Section):
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


class TeacherTrainingSettings(Section):
    network: NetworkSettings
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


class EvalSettings(Section):
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


class GuidesSettings(Section):
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


class TeacherPoolSettings(Section):
    """One kind of teacher actor: which checkpoints make which guides, how many replicas, what resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    checkpoints: list[str] = Field(
        min_length=1,
        description="one per guide (the first also couples); a single entry serves every guide; "
        "with ensemble: the members",
    )
    ensemble: bool = Field(
        False,
        description="the checkpoints are one teacher whose velocity is the mean of theirs "
        "(teachers.ensemble; each actor holds all of them): it couples, makes every guide and is the "
        "distribution-matching phase's teacher; student.init teacher copies the first member's weights",
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

    @model_validator(mode="after")
    def _ensemble_has_members(self) -> "TeacherPoolSettings":
        if self.ensemble and len(self.checkpoints) < 2:
            raise ValueError(
                f"teachers[{self.name}].ensemble is true with {len(self.checkpoints)} checkpoint: an ensemble "
                'averages two or more; list its members (checkpoints: [self, "self:1"]) or set ensemble: false'
            )
        return self

    def guide_checkpoints(self, n_guides: int) -> list[str]:
        """The checkpoint that makes each guide: one per guide, or the single entry for all of them."""
        return (self.checkpoints if len(self.checkpoints) > 1 else self.checkpoints * n_guides)[:n_guides]

    def first_teacher(self) -> TeacherSpec:
        """The pool's coupling teacher, and the run's first teacher when this is its first pool: the ensemble
        of every checkpoint, else the first checkpoint."""
        return TeacherSpec(tuple(self.checkpoints) if self.ensemble else tuple(self.checkpoints[:1]), self.convention)

    def guide_teachers(self, n_guides: int) -> list[TeacherSpec]:
        """The teacher that makes each guide: the ensemble for all of them, else ``guide_checkpoints``."""
        if self.ensemble:
            return [self.first_teacher()] * n_guides
        return [TeacherSpec((c,), self.convention) for c in self.guide_checkpoints(n_guides)]

    def guides_from_coupling(self, guides: GuidesSettings) -> list[bool]:
        """Which guides this pool takes from its coupling solve for free (``teachers.guides.from_coupling``)."""
        own = [t == self.first_teacher() for t in self.guide_teachers(guides.n_guides)]
        return from_coupling(guides.coupling_settings(), guides.rule, guides.guide_times(), own)


def with_default_pool(pools: list[TeacherPoolSettings]) -> list[TeacherPoolSettings]:
    """The run's teacher pools: those configured, or, with none, one pool named ``teacher`` on the run's own
    teacher (``self``). The one place that default is chosen (the run configuration applies it when it
    validates)."""
    return pools or [TeacherPoolSettings(name="teacher", checkpoints=["self"])]
