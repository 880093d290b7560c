"""The run configuration as the command line and the job read it.

``load_config`` reads a YAML file, applies ``--set a.b=value`` overrides, validates, and makes every path
absolute (``cluster.paths``: where the driver was started is a cluster concern). The schema itself (the
typed sections, ``RunConfig``, ``ConfigError``, ``parse_config`` ...) lives in ``teachers.config``, the
lowest package that reads a configuration, and is re-exported here for the command line and the job.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.paths import resolve_run_paths
from teachers.config import (
    DEVICES,
    PRECISIONS,
    ConfigError,
    DataConfig,
    Device,
    EvalConfig,
    GuidesConfig,
    NetworkConfig,
    Precision,
    RunConfig,
    Section,
    StoreConfig,
    StudentConfig,
    TeacherConfig,
    TeacherPoolConfig,
    apply_overrides,
    dump_config,
    format_errors,
    parse_config,
    public_config,
    redact_url,
)

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
    "load_config",
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
