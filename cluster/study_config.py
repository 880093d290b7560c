"""The study configuration (``configs/study_*.yaml``): a base run, the teachers, the variant matrix, the claims.

A study runs every variant with every objective it lists, once per seed (with a ``screen``: every variant at
the screen's seeds, then only the finalists at the others), each
through the main job (``cluster.job.run``) with only configuration changed:

    run config = base file  +  study ``set``  +  variant ``set``  +  ``student.objective``
                 + ``seed``, ``name``, ``run_dir`` and the teacher checkpoints the variant names

Teachers are trained once per seed and recipe and shared by every variant of
that seed, so variants of one seed are paired comparisons. ``quick`` is the
reduced study CI runs: fewer seeds and smaller settings, the same rows.

Every run configuration is built and validated when the study is loaded, so a
bad override is an error that names the variant and the key before any work.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from cluster.config import (
    ConfigError,
    RunConfig,
    Section,
    apply_overrides,
    format_errors,
    parse_config,
    resolve_run_paths,
)
from cluster.paths import resolve_output
from student.objectives import OBJECTIVES
from student.section import ObjectiveName

__all__ = [
    "StudyConfig",
    "TeacherRecipe",
    "Variant",
    "Claim",
    "Screen",
    "VariantRun",
    "load_study",
    "variant_runs",
    "teacher_config",
]

_NAME = r"^[A-Za-z0-9_.-]+$"


class TeacherRecipe(Section):
    """A teacher every seed trains: the base recipe plus ``set``, with seed ``seed + seed_offset``."""

    label: str
    seed_offset: int = Field(0, ge=0, le=1000)
    set: list[str] = Field(default_factory=list)


class Variant(Section):
    """One row group of the study: configuration overrides, the teachers (recipe keys; one serves every guide,
    or one per guide, or with ``ensemble`` all of them as one teacher) and the objectives it runs with."""

    name: str = Field(pattern=_NAME)
    label: str
    teachers: list[str] = Field(min_length=1, max_length=3)
    ensemble: bool = Field(
        False,
        description="the teachers are one ensemble teacher, the mean of their velocities (teachers[].ensemble)",
    )
    set: list[str] = Field(default_factory=list)
    objectives: list[ObjectiveName] = Field(default_factory=lambda: ["velocity", "flow_map"], min_length=1)

    @model_validator(mode="after")
    def _teacher_count(self) -> "Variant":
        if self.ensemble and (len(self.teachers) < 2 or len(set(self.teachers)) < len(self.teachers)):
            raise ValueError(
                f"variant {self.name!r}: ensemble: true averages 2 or 3 different teachers, got {self.teachers}; "
                "list each recipe once (or drop ensemble for one teacher)"
            )
        if len(self.teachers) > 2 and not self.ensemble:
            raise ValueError(
                f"variant {self.name!r}: {len(self.teachers)} teachers, but a cubic has two guides; "
                "one teacher per guide takes at most 2 (set ensemble: true to average them as one teacher)"
            )
        return self


class Claim(Section):
    """A statement the report tests: the best of ``better`` against the best of ``than`` at ``steps``.

    Entries are ``variant`` (any of its objectives) or ``variant/objective``."""

    text: str
    paper: bool = Field(
        False, description="a claim of the paper behind the project (the report lists where these do not hold)"
    )
    better: list[str] = Field(min_length=1)
    than: list[str] = Field(min_length=1)
    steps: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)


class QuickSettings(Section):
    """The reduced study (``--quick``): its seeds and the extra overrides that make every run small."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: list[str] = Field(default_factory=list)


class Screen(Section):
    """Screen, then finalists: every variant runs at ``seeds`` first; then only the finalists run at the
    study's other seeds. The finalists are the ``keep`` best variant/objective rows of the screen (the lowest
    mean, over ``steps``, of the primary metric over the teacher's best: FID or sliced W2 / the best teacher
    row of the same seed) and every row of the variants in ``always`` (the default and the baseline, say).
    ``--quick`` runs every variant at the quick seeds and screens nothing."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    keep: int = Field(2, ge=0)
    steps: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    always: list[str] = Field(default_factory=list)


class StudyConfig(Section):
    name: str = Field(pattern=_NAME)
    base: str = Field(
        description="the run configuration every variant starts from: a path from the current "
        "directory, else beside the study file"
    )
    run_dir: str = "runs"
    seeds: list[int] = Field(min_length=1)
    set: list[str] = Field(default_factory=list)
    teachers: dict[str, TeacherRecipe] = Field(min_length=1)
    variants: list[Variant] = Field(min_length=1)
    claims: list[Claim] = Field(default_factory=list)
    quick: QuickSettings = QuickSettings()
    screen: Screen | None = Field(
        None,
        description="screen every variant at a few seeds, then run only the "
        "finalists at the others (None: every variant at every seed)",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="decisions taken because of the study, in plain "
        "words; the report prints them under its conclusion (no numbers: those are generated)",
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> "StudyConfig":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for v in self.variants:
            unknown = [t for t in v.teachers if t not in self.teachers]
            if unknown:
                raise ValueError(f"variant {v.name!r}: unknown teachers {unknown}; known: {sorted(self.teachers)}")
        if self.screen is not None:
            extra = [s for s in self.screen.seeds if s not in self.seeds]
            if extra:
                raise ValueError(f"screen.seeds {extra} are not among the study's seeds {self.seeds}")
            unknown = [n for n in self.screen.always if n not in names]
            if unknown:
                raise ValueError(f"screen.always: unknown variants {unknown}; variants: {names}")
        for claim in self.claims:
            for entry in claim.better + claim.than:
                name, _, objective = entry.partition("/")
                if name not in names or objective not in ("", *OBJECTIVES):
                    raise ValueError(
                        f"claim {claim.text!r}: {entry!r} is not VARIANT or VARIANT/OBJECTIVE "
                        f"(variants: {names}; objectives: {', '.join(OBJECTIVES)})"
                    )
        return self


class VariantRun:
    """One run of the matrix: a variant, an objective, a seed, and its validated run configuration."""

    def __init__(self, variant: Variant, objective: str, seed: int, cfg: RunConfig):
        self.variant, self.objective, self.seed, self.cfg = variant, objective, seed, cfg

    @property
    def key(self) -> str:
        return f"{self.variant.name}-{self.objective}-s{self.seed}"

    @property
    def row(self) -> str:
        """The report's row this run belongs to (``variant/objective``)."""
        return f"{self.variant.name}/{self.objective}"


def _base_raw(study: StudyConfig, source: Path) -> dict:
    path = Path(study.base)
    if not path.is_file() and (source.parent / path).is_file():
        path = source.parent / path
    if not path.is_file():
        raise ConfigError(f"study {source}: base run configuration {study.base} does not exist")
    return yaml.safe_load(path.read_text()) or {}


def work_dir(study: StudyConfig, quick: bool) -> Path:
    """Where the study's teachers and runs live (``RUN_DIR/study-NAME``, ``...-quick`` for the reduced one)."""
    return Path(study.run_dir) / f"study-{study.name}{'-quick' if quick else ''}"


def _study_overrides(study: StudyConfig, quick: bool) -> list[str]:
    return study.set + (study.quick.set if quick else [])


def teacher_config(study: StudyConfig, base: dict, key: str, seed: int, quick: bool) -> RunConfig:
    """The run configuration a teacher recipe trains with for one study seed."""
    recipe = study.teachers[key]
    raw = apply_overrides(base, _study_overrides(study, quick) + recipe.set)
    raw.update(
        seed=seed + recipe.seed_offset,
        name=f"{study.name}-teacher-{key}-s{seed}",
        run_dir=str(work_dir(study, quick) / "teachers"),
    )
    raw.setdefault("data", {})["split_seed"] = seed  # every model of a seed holds out the same data
    return resolve_run_paths(parse_config(raw, f"study {study.name}: teacher {key!r} (seed {seed})"))


def teacher_path(study: StudyConfig, key: str, seed: int, quick: bool) -> Path:
    return work_dir(study, quick) / "teachers" / f"s{seed}" / key


def variant_runs(study: StudyConfig, base: dict, quick: bool) -> list[VariantRun]:
    """Every run of the matrix, seed by seed (so a partial study has whole seeds), validated."""
    runs = []
    seeds = study.quick.seeds if quick else study.seeds
    for seed in seeds:
        for v in study.variants:
            for objective in v.objectives:
                raw = apply_overrides(base, _study_overrides(study, quick) + v.set + [f"student.objective={objective}"])
                pool = dict((raw.get("teachers") or [{}])[0])  # its name and checkpoints set below
                pool.update(
                    name="teacher",
                    checkpoints=[str(teacher_path(study, t, seed, quick).resolve()) for t in v.teachers],
                    ensemble=v.ensemble,
                )
                raw.update(
                    seed=seed,
                    name=f"{study.name}-{v.name}-{objective}-s{seed}",
                    teachers=[pool],
                    run_dir=str(work_dir(study, quick) / "runs"),
                )
                cfg = resolve_run_paths(
                    parse_config(raw, f"study {study.name}: variant {v.name!r} ({objective}, seed {seed})")
                )
                runs.append(VariantRun(v, objective, seed, cfg))
    return runs


def _read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A study file's mapping; with ``extends: OTHER`` (a path beside it or from the current directory),
    OTHER's mapping with this file's top-level keys in place of its own (the same variants at another
    budget, say)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"study file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {path} is not a mapping of keys to values")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    other = Path(parent) if Path(parent).is_file() else path.parent / parent
    if not other.is_file():
        raise ConfigError(f"study {path}: extends {parent}, which does not exist")
    if other.resolve() in seen:
        raise ConfigError(f"study {path}: extends {parent}, which extends it back")
    return {**_read_raw(other, seen + (path.resolve(),)), **raw}


def load_study(path: str | Path, quick: bool = False) -> tuple[StudyConfig, dict, list[VariantRun]]:
    """Read and validate a study, its base configuration and every run and teacher configuration it makes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        study = StudyConfig.model_validate(_read_raw(path))
    except ValidationError as err:
        raise ConfigError(format_errors(err, f"study {path}", StudyConfig)) from None
    study = study.model_copy(update={"run_dir": str(resolve_output(study.run_dir))})
    base = _base_raw(study, path)
    for key in study.teachers:
        for seed in study.quick.seeds if quick else study.seeds:
            teacher_config(study, base, key, seed, quick)
    runs = variant_runs(study, base, quick)
    if study.screen is not None:
        for r in runs:
            missing = [k for k in study.screen.steps if k not in r.cfg.student.eval_steps]
            if missing:
                raise ConfigError(
                    f"study {path}: screen.steps {missing} are not among variant {r.variant.name!r}'s "
                    f"student.eval_steps {r.cfg.student.eval_steps}: the screen ranks by them"
                )
    return study, base, runs
