"""Evaluate and sample any model folder (native teacher, native student, diffusers): quality against steps,
and sample figures. The data and evaluation settings come from the run configuration the folder records,
or from one given explicitly (a diffusers folder records none)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from guide_store.settings import ConfigError, format_section_errors
from student.models import LoadedModel, load_model
from teachers.checkpoint import META_FILE, CheckpointError
from teachers.conventions import DEFAULT_CONVENTION
from teachers.data import DataSplit
from teachers.evaluation import QualitySettings, evaluate_sampler, noise_for_eval
from teachers.models import teacher_sampler
from teachers.plots import save_sample_figure
from teachers.settings import DataSettings, EvalSettings
from teachers.train_teacher import load_run_data

__all__ = [
    "MeasuredRun",
    "RecordedRun",
    "load_model_and_data",
    "run_config_of",
    "teacher_sampler",
    "evaluate_loaded",
    "evaluate_model",
    "sample_model",
    "evaluate_teacher",
    "sample_teacher",
]


class MeasuredRun(Protocol):
    """What measuring a model reads of a run's configuration: its seed and its ``data`` and ``eval`` sections
    (a whole run configuration has them)."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def seed(self) -> int: ...

    @property
    def data(self) -> DataSettings: ...

    @property
    def eval(self) -> EvalSettings: ...


class RecordedRun(BaseModel):
    """The ``MeasuredRun`` part of the run configuration a model folder records (its ``training``); the
    record's other sections are the run's business, not the measurement's."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    seed: int = 0
    data: DataSettings
    eval: EvalSettings = EvalSettings()


def run_config_of(loaded: LoadedModel, config: MeasuredRun | None = None) -> MeasuredRun:
    """``config`` when given, else the run configuration the folder records; ``CheckpointError`` if neither."""
    if config is not None:
        return config
    if not loaded.training:
        where = loaded.path / ("config.json" if loaded.kind == "diffusers" else META_FILE)
        raise CheckpointError(
            f"{where}: records no run configuration, so the data to evaluate against is unknown; "
            "pass one with --config CONFIG (a run configuration whose data section names the data, "
            "e.g. configs/digits.yaml)"
        )
    source = f"{loaded.path / META_FILE}:training"
    try:
        return RecordedRun.model_validate(loaded.training)
    except ValidationError as err:
        raise ConfigError(format_section_errors(err, source, RecordedRun)) from None


def load_model_and_data(
    checkpoint: str | Path, convention: str = DEFAULT_CONVENTION, config: MeasuredRun | None = None
) -> tuple[LoadedModel, DataSplit, MeasuredRun]:
    """The model, the data it is measured against and the run configuration that names that data."""
    loaded = load_model(checkpoint, convention)
    cfg = run_config_of(loaded, config)
    data = load_run_data(cfg.data, cfg.seed)
    if data.data_shape != loaded.data_shape:
        where = loaded.path / ("config.json" if loaded.kind == "diffusers" else META_FILE)
        raise CheckpointError(
            f"{where}: data shape {list(loaded.data_shape)} does not match the data "
            f"{cfg.data.name!r} {list(data.data_shape)}"
        )
    return loaded, data, cfg


def _label(loaded: LoadedModel, solver: str) -> str:
    return f"student/{loaded.objective}" if loaded.kind == "student" else f"{loaded.kind}/{solver}"


def evaluate_loaded(
    loaded: LoadedModel, data: DataSplit, steps: list[int], solver: str, settings: QualitySettings
) -> dict:
    """Quality table of a loaded model for each step count. Teachers: ``solver`` (one row for ``adaptive``);
    students: student steps (``solver`` does not apply)."""
    adaptive = solver == "adaptive" and loaded.kind != "student"
    step_list: list[int | None] = [None] if adaptive else list(steps)
    table = evaluate_sampler(loaded.sampler(solver), data, step_list, settings, label=_label(loaded, solver))
    table.update(
        {
            "checkpoint": str(loaded.path),
            "kind": loaded.kind,
            "data": data.name,
            "solver": solver if loaded.kind != "student" else None,
            "objective": loaded.objective,
            "metric_kind": data.kind,
        }
    )
    return table


def evaluate_model(
    checkpoint: str | Path,
    steps: list[int],
    solver: str,
    settings: QualitySettings,
    convention: str = DEFAULT_CONVENTION,
    config: MeasuredRun | None = None,
) -> dict:
    """``evaluate_loaded`` of a model folder against the data its run configuration (or ``config``) names."""
    loaded, data, _ = load_model_and_data(checkpoint, convention, config)
    return evaluate_loaded(loaded, data, steps, solver, settings)


def sample_model(
    checkpoint: str | Path,
    steps: list[int],
    solver: str,
    out: str | Path,
    n: int = 64,
    seed: int = 0,
    convention: str = DEFAULT_CONVENTION,
    config: MeasuredRun | None = None,
) -> Path:
    """A figure with one panel per step count (image grid or 2-D scatter) beside real data."""
    loaded, data, _ = load_model_and_data(checkpoint, convention, config)
    noise = noise_for_eval(n, data.data_shape, seed)
    sampler = loaded.sampler(solver)
    name = f"student {loaded.objective}" if loaded.kind == "student" else solver
    panels = {}
    for k in steps:
        sol = sampler(noise, k)
        panels[f"{name}, {k} step{'s' if k > 1 else ''} (NFE {sol.nfe})"] = sol.x
    return save_sample_figure(panels, out, reference=data.held_out[:n])


# the names before students and diffusers folders were accepted; callers elsewhere still use them
evaluate_teacher = evaluate_model
sample_teacher = sample_model
