"""The command line's log lines: bare on stdout, above a progress bar, ``--quiet`` and ``--verbose``."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from cluster.cli import build_parser
from cluster.logs import PACKAGES, TqdmHandler, configure_logging, level_of, quieted

SCRIPT = Path(sys.executable).parent / "bezier-distill"
if not SCRIPT.exists():
    SCRIPT = Path(shutil.which("bezier-distill") or "bezier-distill")


@pytest.fixture(autouse=True)
def unconfigured():
    """The package loggers as a test process starts, after each test here (no handler, no level)."""
    yield
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, TqdmHandler)]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)


def test_a_line_logged_during_a_bar_goes_above_it(capsys):
    configure_logging(logging.INFO)
    configure_logging(logging.INFO)  # set again (as a second main() does): still one line per record
    bar = tqdm(total=10, file=sys.stdout, desc="work")
    bar.update(3)
    logging.getLogger("cluster.job").info("run x: writing to y")
    bar.close()
    out = capsys.readouterr().out
    assert out.count("run x: writing to y") == 1
    assert "\rrun x: writing to y\n" in out  # the bar cleared first (tqdm.write), not the line glued to it


def test_quieted_keeps_warnings_and_verbose_hides_nothing(capsys):
    log = logging.getLogger("student.run_report")
    configure_logging(level_of())
    with quieted():
        log.info("an info line")
        log.warning("warning: a warning line")
    assert logging.getLogger("student").level == logging.INFO  # put back after the block
    log.debug("a debug line")
    configure_logging(level_of(verbose=True))
    with quieted():
        log.debug("a verbose debug line")
    configure_logging(level_of(quiet=True))
    log.info("a quiet info line")
    out = capsys.readouterr().out
    assert out.splitlines() == ["warning: a warning line", "a verbose debug line"]


def test_quiet_and_verbose_are_global_flags():
    args = build_parser().parse_args(["--quiet", "status", "r"])
    assert (args.quiet, args.verbose) == (True, False)


def test_store_bench_lines_are_bare_and_quiet_drops_them():
    common = ["store", "bench", "--batch-mb", "0.05", "--seconds", "0.1", "--pairs", "1"]
    loud = subprocess.run([SCRIPT, *common], capture_output=True, text=True, timeout=300)
    quiet = subprocess.run([SCRIPT, "--quiet", *common], capture_output=True, text=True, timeout=300)
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert loud.stdout.splitlines()[0].startswith("  0.05 MB  raw ")  # as print wrote it: no level prefix
    assert "MB  raw" not in quiet.stdout and quiet.stdout.startswith("redis ")  # the result is still printed
