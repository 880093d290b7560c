"""What the command line does with an error that reaches it: the one place that catches the project's error
family (``guide_store.errors``) and the one table of exit codes (README.md shows it).

A user's mistake is one line on stderr, ``error: MESSAGE``, never a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from cluster.ledger import LedgerError
from guide_store.errors import BezierDistillError

__all__ = ["EXIT_CODES", "exit_code", "guarded"]

# a class's code is that of the first class of its MRO in the table: a kind without its own row has its base's
EXIT_CODES: dict[type[BaseException], int] = {
    LedgerError: 1,  # the run went through and failed its id ledger: its report says why
    BezierDistillError: 2,  # a mistake in the config, data, checkpoint, store, cluster: nothing (more) ran
    FileNotFoundError: 2,  # a path that is not there (a config file, a run folder, a store)
    KeyboardInterrupt: 130,  # Ctrl-C, or SIGTERM (``ray job stop``) turned into one by ``cluster.job``
}


def exit_code(err: BaseException) -> int | None:
    """The exit code ``EXIT_CODES`` gives ``err``'s class (by its MRO); ``None`` when it has none (a bug)."""
    return next((EXIT_CODES[c] for c in type(err).__mro__ if c in EXIT_CODES), None)


def guarded(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a verb's body; an error with a code in ``EXIT_CODES`` is said on stderr and becomes its code."""
    try:
        return command(args)
    except tuple(EXIT_CODES) as err:
        if isinstance(err, KeyboardInterrupt):
            print(f"interrupted ({err or 'Ctrl-C'})", file=sys.stderr)
        else:
            print(f"error: {err}", file=sys.stderr)
        code = exit_code(err)
        assert code is not None  # err is an instance of one of EXIT_CODES' classes
        return code
