"""Where the project's log lines go: each module logs to ``logging.getLogger(__name__)``; the command line
(``cluster.cli``, ``python -m cluster.job``) sets the handler once with ``configure_logging``.

The lines read as they always did: the bare message on stdout, no level or time prefix, written through
``tqdm.write`` so a line printed while a progress bar runs goes above the bar. ``--quiet`` keeps warnings and
errors, ``--verbose`` adds debug lines. Without ``configure_logging`` (the API, the tests) nothing is
printed below a warning; ``caplog`` sees every line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm

__all__ = ["PACKAGES", "TqdmHandler", "add_log_arguments", "configure_logging", "level_of", "quieted"]

PACKAGES = ("cluster", "teachers", "student", "guide_store")


class TqdmHandler(logging.Handler):
    """One line per record on stdout (looked up at each line, so a redirected stdout is followed), through
    ``tqdm.write``: above any progress bar on the screen, flushed at once for a job log."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
            sys.stdout.flush()
        except Exception:  # logging's own rule: a broken stream never takes the program down
            self.handleError(record)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The global ``--quiet`` / ``--verbose`` flags (before the subcommand: ``bezier-distill --quiet run ...``)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only")
    which.add_argument("--verbose", "-v", action="store_true", help="debug lines too")


def level_of(quiet: bool = False, verbose: bool = False) -> int:
    """The level of the ``--quiet`` / ``--verbose`` flags: WARNING, DEBUG, else INFO."""
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


def configure_logging(level: int = logging.INFO) -> None:
    """Give the project's package loggers one ``TqdmHandler`` (replacing one set before: calling again, as
    tests calling ``main`` do, never doubles a line) at ``level``; other libraries' loggers are left as
    they are."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, TqdmHandler)]:
            logger.removeHandler(old)
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def quieted(names: tuple[str, ...] = PACKAGES) -> Iterator[None]:
    """Warnings and errors only from the loggers ``names`` (and their children) inside the block: for work
    whose lines the caller sums up itself (a study's runs, a benchmark's JSON). Under ``--verbose`` (a
    logger at DEBUG) nothing is hidden."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            if lg.getEffectiveLevel() > logging.DEBUG:
                lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)
