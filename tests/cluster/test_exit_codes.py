"""The error family (``guide_store.errors``): its builtin bases kept, one exit code table, caught once."""

import argparse
import re
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.exit_codes import EXIT_CODES, exit_code, guarded
from cluster.job import RunExistsError
from cluster.ledger import LedgerError
from cluster.pipeline_bench import BenchError
from cluster.preflight import PreflightError
from guide_store.errors import BezierDistillError, ClusterError, StoreError
from guide_store.redis_store import BackpressureTimeout
from guide_store.schema import RecordError
from teachers.checkpoint import CheckpointError
from guide_store.settings import ConfigError
from teachers.data import DataError

FAMILY = {  # each class: its kind, the builtin base its callers catch, its exit code
    ConfigError: (BezierDistillError, ValueError, 2),
    DataError: (BezierDistillError, ValueError, 2),
    CheckpointError: (BezierDistillError, ValueError, 2),
    RecordError: (StoreError, ValueError, 2),
    BackpressureTimeout: (StoreError, TimeoutError, 2),
    PreflightError: (ClusterError, RuntimeError, 2),
    RunExistsError: (ClusterError, ValueError, 2),
    BenchError: (ClusterError, ValueError, 2),
    LedgerError: (ClusterError, RuntimeError, 1),
}


@pytest.mark.parametrize("cls", list(FAMILY), ids=lambda c: c.__name__)
def test_each_error_is_of_the_family_keeps_its_base_and_has_its_code(cls):
    kind, builtin, code = FAMILY[cls]
    err = cls("what went wrong")
    assert isinstance(err, kind) and isinstance(err, BezierDistillError) and isinstance(err, builtin)
    assert exit_code(err) == code


def test_a_bug_has_no_code_and_keeps_its_traceback():
    assert exit_code(ValueError("a bug")) is None

    def broken(args):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        guarded(broken, argparse.Namespace())


@pytest.mark.parametrize("err", [LedgerError("lost 3"), BenchError("no GPU"), KeyboardInterrupt("signal SIGTERM")])
def test_guarded_says_the_error_in_one_line_and_returns_its_code(err, capsys):
    def command(args):
        raise err

    assert guarded(command, argparse.Namespace()) == exit_code(err)
    said = capsys.readouterr().err
    assert said == (f"interrupted ({err})\n" if isinstance(err, KeyboardInterrupt) else f"error: {err}\n")


def test_main_says_a_missing_store_in_one_line(tmp_path, capsys):
    assert main(["store", "stats", "nope", "--run-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_readme_lists_every_exit_code():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", readme, flags=re.M)}
    assert listed == {0, *EXIT_CODES.values()}
