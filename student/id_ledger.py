"""The trainers' half of the run's id ledger: which sample ids went into an optimizer step as fresh records.

Each rank appends to ``LEDGER_DIR/rank-R.jsonl`` (in the run folder, never in a checkpoint, so no restore
can rewrite it): a header line when a worker starts (its attempt, the step it resumed at) and one line per
step that took fresh records, ``{"a": attempt, "s": step, "ids": [[start, count], ...]}``. Replay draws
are reuse by design and are not written. Lines are buffered and written before each checkpoint is
reported, so every step a checkpoint holds is on disk before any later attempt can resume from it.

``trained_steps`` reads the files back as the run's surviving history: a group that died and resumed from
the checkpoint at step S threw away its steps after S, so only the steps of each attempt up to the step
the next attempt resumed at count. An id in two of those steps was trained twice; an id in none was not
trained at all, whatever the store's counters say.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from guide_store.redis_store import id_runs

__all__ = ["RankLedger", "trained_steps", "rank_nodes", "LEDGER_DIR"]

LEDGER_DIR = "ledger"


class RankLedger:
    """Append-only record of one rank's fresh ids per step (see the module docstring)."""

    def __init__(self, folder: str | Path, rank: int, world: int, resumed_at: int, node: str | None = None):
        self.path = Path(folder) / f"rank-{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.attempt = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lines = [json.dumps({"a": self.attempt, "header": True, "rank": rank, "world": world,
                                   "resumed_at": resumed_at, "node": node, "time": time.time()})]
        self.flush()

    def step(self, step: int, ids: list[int]) -> None:
        if ids:
            self._lines.append(json.dumps({"a": self.attempt, "s": step, "ids": id_runs(ids)}))

    def flush(self) -> None:
        """Write the buffered lines (before a checkpoint is reported, and at the end)."""
        if not self._lines:
            return
        with self.path.open("a") as f:
            f.write("".join(line + "\n" for line in self._lines))
            f.flush()
            os.fsync(f.fileno())
        self._lines = []


def _read(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed writer: it was after the last checkpoint
            continue
    return rows


def rank_nodes(folder: str | Path) -> dict[str, list[str]]:
    """``student-rank-R`` -> the nodes each attempt of that rank ran on, from the headers (in order)."""
    out: dict[str, list[str]] = {}
    for path in sorted(Path(folder).glob("rank-*.jsonl")):
        nodes = out.setdefault(f"student-{path.stem}", [])
        for row in _read(path):
            if row.get("header") and row.get("node") and row["node"] not in nodes:
                nodes.append(row["node"])
    return out


def trained_steps(folder: str | Path) -> list[tuple[int, int, list[list[int]]]]:
    """``(rank, step, id runs)`` for every step of the run's surviving history (module docstring): per rank,
    the last attempt's steps, and each earlier attempt's steps up to the step the attempt after it resumed at
    (and after the step it resumed at itself)."""
    out = []
    for path in sorted(Path(folder).glob("rank-*.jsonl")):
        rank = int(path.stem.split("-")[1])
        rows = _read(path)
        headers = [r for r in rows if r.get("header")]
        bound = None  # the step the attempt after this one resumed at (None for the last attempt)
        for header in reversed(headers):
            start = header["resumed_at"]
            for r in rows:
                if r.get("a") == header["a"] and "s" in r and r["s"] > start and (bound is None or r["s"] <= bound):
                    out.append((rank, r["s"], r["ids"]))
            bound = start if bound is None else min(bound, start)
    return out
