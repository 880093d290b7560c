"""The trainers' half of the run's id ledger: which sample ids went into an optimizer step as fresh records.

Each rank appends to ``LEDGER_DIR/rank-R.jsonl`` (in the run folder, never in a checkpoint, so no restore
can rewrite it): a header line when a worker starts (its attempt, the step it resumed at) and one line per
step that took fresh records, ``{"a": attempt, "s": step, "ids": [[start, count], ...]}``. Replay draws
are reuse by design and are not written. Lines are buffered and written before each checkpoint is
reported, so every step a checkpoint holds is on disk before any later attempt can resume from it.

``trained_steps`` reads the files back as the run's surviving history: a worker group that died (or was
resized) and was followed by one resumed from the checkpoint at step S threw away its steps after S, so only
the steps of each group up to the step every later group resumed at count. Groups are told apart by an id
their ranks share (drawn by rank 0), and ordered by when their first rank started; the world size may differ
from one group to the next (an elastic pool), so the rule reads every rank's file, not one rank's. An id in
two of those steps was trained twice; an id in none was not trained at all, whatever the store's counters say.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from guide_store.redis_store import id_runs

__all__ = ["RankLedger", "trained_steps", "rank_nodes", "pool_history", "LEDGER_DIR"]

LEDGER_DIR = "ledger"


class RankLedger:
    """Append-only record of one rank's fresh ids per step (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        rank: int,
        world: int,
        resumed_at: int,
        node: str | None = None,
        group: int | None = None,
        took_over: int = 0,
        from_world: int | None = None,
    ):
        """``took_over``: store entries this rank took over from ranks a smaller pool no longer has;
        ``from_world``: the world size of the checkpoint it resumed from (its own when not resharded)."""
        self.path = Path(folder) / f"rank-{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.attempt = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lines = [
            json.dumps(
                {
                    "a": self.attempt,
                    "header": True,
                    "rank": rank,
                    "world": world,
                    "resumed_at": resumed_at,
                    "node": node,
                    "time": time.time(),
                    "group": group if group is not None else self.attempt,
                    "took_over": took_over,
                    "from_world": from_world or world,
                }
            )
        ]
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


def _groups(folder: str | Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """The worker groups in start order (``{"group", "start", "resumed_at", "world", "nodes", "attempts"}``),
    and each rank file's rows."""
    groups: dict[str, dict] = {}
    rows_of: dict[int, list[dict]] = {}
    for path in sorted(Path(folder).glob("rank-*.jsonl")):
        rank = int(path.stem.split("-")[1])
        rows_of[rank] = _read(path)
        for h in (r for r in rows_of[rank] if r.get("header")):
            g = groups.setdefault(
                str(h.get("group", h["a"])),
                {
                    "group": str(h.get("group", h["a"])),
                    "start": h["time"],
                    "resumed_at": h["resumed_at"],
                    "world": h.get("world"),
                    "nodes": {},
                    "attempts": set(),
                    "took_over": 0,
                    "from_world": h.get("from_world", h.get("world")),
                },
            )
            g["start"] = min(g["start"], h["time"])
            g["took_over"] += h.get("took_over", 0)
            g["attempts"].add(h["a"])
            g["nodes"][str(rank)] = h.get("node")
    return sorted(groups.values(), key=lambda g: g["start"]), rows_of


def trained_steps(folder: str | Path) -> list[tuple[int, int, list[list[int]]]]:
    """``(rank, step, id runs)`` for every step of the run's surviving history (module docstring): each
    group's steps after the step it resumed at, up to the least step any later group resumed at."""
    ordered, rows_of = _groups(folder)
    bound_of: dict[str, tuple[int | None, int]] = {}  # attempt -> (the step it is bounded by, it resumed at)
    bound = None  # the least step a later group resumed at (None for the last group)
    for g in reversed(ordered):
        for a in g["attempts"]:
            bound_of[a] = (bound, g["resumed_at"])
        bound = g["resumed_at"] if bound is None else min(bound, g["resumed_at"])
    out = []
    for rank, rows in rows_of.items():
        for r in rows:
            if "s" not in r or r.get("a") not in bound_of:
                continue
            upper, start = bound_of[r["a"]]
            if r["s"] > start and (upper is None or r["s"] <= upper):
                out.append((rank, r["s"], r["ids"]))
    return out


def pool_history(folder: str | Path) -> list[dict]:
    """The student pool's worker groups in order: the step each resumed at, its world size, the world size of
    the checkpoint it resumed from, the store entries its ranks took over from ranks it no longer had, and its
    ranks' nodes (from the ledger headers: what the ranks themselves saw)."""
    ordered, _ = _groups(folder)
    return [
        {
            "resumed_at": g["resumed_at"],
            "world": g["world"],
            "from_world": g["from_world"],
            "took_over": g["took_over"],
            "nodes": dict(sorted(g["nodes"].items())),
        }
        for g in ordered
    ]
