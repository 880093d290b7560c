"""The run configuration: ``RunConfig``, assembled from the sections each package owns, and how a YAML file
becomes one.

Each package owns the settings of its part beside the code that reads them: the store's
(``guide_store.settings``), the teachers' data, network, teacher training, evaluation, guides and teacher pool
(``teachers.settings``) and the student's (``student.section``). Here they are put together, with the checks
that span sections. ``load_config`` reads a YAML file, applies ``--set a.b=value`` overrides to the raw mapping
before validation (so they are checked the same way), validates, and makes every path absolute
(``cluster.paths``). An unknown key, a wrong type or an out-of-range value raises ``ConfigError`` whose message
names the dotted key, what is allowed, and what was given.

The YAML keys ``teacher`` (teacher training) and ``teachers`` (the teacher-actor pool) are ``teacher_training``
and ``teacher_pool`` in the code, and ``student.finetune`` is ``student.dm_phase``; files, reports and
``model_dump`` keep the YAML keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from cluster.paths import is_own_teacher_ref, resolve_input, resolve_output
from guide_store.settings import ConfigError, Section, StoreSettings, format_section_errors, redact_url
from student.section import DmPhaseSettings, StudentSettings
from teachers.settings import (
    DEVICES,
    PRECISIONS,
    DataSettings,
    Device,
    EvalSettings,
    GuidesSettings,
    NetworkSettings,
    Precision,
    TeacherPoolSettings,
    TeacherTrainingSettings,
    with_default_pool,
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataSettings",
    "NetworkSettings",
    "TeacherTrainingSettings",
    "EvalSettings",
    "StoreSettings",
    "GuidesSettings",
    "TeacherPoolSettings",
    "StudentSettings",
    "DmPhaseSettings",
    "Section",
    "load_config",
    "resolve_run_paths",
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
]


class RunConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    run_dir: str = "runs"
    data: DataSettings
    teacher_training: TeacherTrainingSettings = Field(alias="teacher")
    eval: EvalSettings = EvalSettings()
    store: StoreSettings = StoreSettings()
    guides: GuidesSettings = GuidesSettings()
    teacher_pool: list[TeacherPoolSettings] = Field(default_factory=list, alias="teachers", validate_default=True)
    student: StudentSettings = StudentSettings()
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

    @field_validator("teacher_pool")
    @classmethod
    def _default_pool(cls, v: list[TeacherPoolSettings]) -> list[TeacherPoolSettings]:
        return with_default_pool(v)

    @model_validator(mode="after")
    def _guides_match_teachers(self) -> "RunConfig":
        k = self.guides.n_guides
        if self.guides.taus is not None and len(self.guides.taus) != k:
            raise ValueError(f"guides.taus has {len(self.guides.taus)} entries; path {self.guides.path!r} needs {k}")
        for pool in self.teacher_pool:
            if not pool.ensemble and len(pool.checkpoints) not in (1, max(k, 1)):
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

    def dump(self) -> str:
        """The resolved configuration as YAML (what a run records in its folder), password masked."""
        return yaml.safe_dump(public_config(self).model_dump(mode="json"), sort_keys=False)

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


def format_errors(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line per error: the dotted key, then what is allowed (an unknown key lists the known ones of
    ``model``'s section there, the run configuration's by default)."""
    return format_section_errors(err, source, model or RunConfig)


def parse_config(raw: Any, source: str = "<mapping>") -> RunConfig:
    """Validate a plain mapping into a ``RunConfig`` or raise ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def public_config(cfg: RunConfig) -> RunConfig:
    """The configuration with ``store.url``'s password masked: what goes into files, reports and the
    settings handed to actors (the URL itself travels separately, to what opens the store)."""
    return cfg.model_copy(update={"store": cfg.store.public()})


def dump_config(cfg: RunConfig) -> str:
    """The resolved configuration as YAML (what a run records in its folder), password masked."""
    return cfg.dump()


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file, apply dotted overrides, validate, and make every path in it absolute
    (``cluster.paths``: relative to the directory the command was started in)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {path}: the top level must be a mapping")
    return resolve_run_paths(parse_config(apply_overrides(raw, overrides or []), str(path)))


def resolve_run_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with every path absolute (see the module docstring); idempotent."""
    update: dict = {"run_dir": str(resolve_output(cfg.run_dir))}
    if cfg.data.path:
        update["data"] = cfg.data.model_copy(update={"path": str(resolve_input(cfg.data.path))})
    update["teacher_pool"] = [
        p.model_copy(
            update={"checkpoints": [c if is_own_teacher_ref(c) else str(resolve_input(c)) for c in p.checkpoints]}
        )
        for p in cfg.teacher_pool
    ]
    student = {}
    if cfg.student.parquet_dir:
        student["parquet_dir"] = str(resolve_input(cfg.student.parquet_dir))
    if cfg.student.storage_path and "://" not in cfg.student.storage_path:  # s3:// and the like stay as given
        student["storage_path"] = str(resolve_output(cfg.student.storage_path))
    if student:
        update["student"] = cfg.student.model_copy(update=student)
    return cfg.model_copy(update=update)
