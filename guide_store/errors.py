"""The project's user-facing errors: one family, so the command line catches them once.

``BezierDistillError`` is a mistake a user can fix or a run that was refused, said in words: the command
line prints ``error: MESSAGE`` (no traceback) and exits with the code ``cluster.exit_codes`` gives its kind.
Each kind has one class here or beside the code that raises it:

- ``guide_store.settings.ConfigError``, ``teachers.data.DataError``, ``teachers.checkpoint.CheckpointError``;
- ``StoreError``: the guide store (``guide_store.schema.RecordError``,
  ``guide_store.redis_store.BackpressureTimeout``);
- ``ClusterError``: the run on its cluster (``cluster.preflight.PreflightError``, ``cluster.job.RunExistsError``,
  ``cluster.ledger.LedgerError``, ``cluster.pipeline_bench.BenchError``).

Each class keeps the builtin base it had (``ValueError``, ``RuntimeError``, ``TimeoutError``), so
``except ValueError`` callers still catch it.
"""

from __future__ import annotations

__all__ = ["BezierDistillError", "ClusterError", "StoreError"]


class BezierDistillError(Exception):
    """A user-facing error of this project (see the module docstring)."""


class StoreError(BezierDistillError):
    """The guide store refused or could not keep records."""


class ClusterError(BezierDistillError):
    """The run and its cluster: a failed pre-flight, a finished run, the id ledger, a benchmark's setup."""
