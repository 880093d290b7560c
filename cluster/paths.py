"""Where a user's relative paths point: resolved once, on the driver, before anything crosses into Ray.

Every path a user writes (config values, ``--set``, CLI arguments) is relative to the directory the
command was started in. Ray Train runs each worker in a working directory of its own and ``ray job
submit --working-dir .`` runs the job in a temporary copy of the user's directory, so a relative path
handed on would point somewhere else. So the driver makes every path absolute first:

* inputs (``data.path``, teacher checkpoints, ``student.parquet_dir``) against the current directory;
  under ``ray job submit --working-dir`` that is the uploaded copy, which holds the files the user
  shipped; an input missing there is looked for under the home below (the outputs of an earlier job);
* outputs (``run_dir``, ``student.storage_path``) against the current directory, except under ``ray job
  submit --working-dir``: that copy vanishes with the job, so outputs go under ``$BEZIER_DISTILL_HOME``
  (default ``~/bezier-distill``) on the driver's node.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from teachers.teacher_refs import own_teacher_index

__all__ = [
    "HOME_ENV",
    "home",
    "in_temporary_job_dir",
    "output_base",
    "resolve_input",
    "resolve_output",
    "is_own_teacher_ref",
]

HOME_ENV = "BEZIER_DISTILL_HOME"
_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint of `ray job submit`


def home() -> Path:
    """Where outputs of jobs submitted with a temporary working directory go."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / "bezier-distill").expanduser().resolve()


def in_temporary_job_dir() -> bool:
    """True when this process is a ``ray job submit --working-dir`` entrypoint: its current directory is
    Ray's copy of the user's directory, deleted after the job."""
    text = os.environ.get(_JOB_ENV)
    if not text:
        return False
    try:
        runtime_env = json.loads(text).get("runtime_env") or {}
    except (json.JSONDecodeError, AttributeError):
        return False
    return bool(runtime_env.get("working_dir"))


def output_base() -> Path:
    return home() if in_temporary_job_dir() else Path.cwd()


def resolve_output(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (output_base() / p).resolve()


def resolve_input(path: str | Path) -> Path:
    """An input path made absolute: the current directory first; under a temporary job directory, the
    home when the file is not in the uploaded copy."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = (Path.cwd() / p).resolve()
    if in_temporary_job_dir() and not here.exists():
        elsewhere = (home() / p).resolve()
        if elsewhere.exists():
            return elsewhere
    return here


def is_own_teacher_ref(ref: str) -> bool:
    """``self`` and ``self:K`` name the run's own teachers, not paths (``teachers.teacher_refs``)."""
    return own_teacher_index(ref) is not None
