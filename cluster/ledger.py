"""The run's id ledger: what became of every planned record, from ids, never from the store's counters.

Three records the store does not keep make it: the controller's plan (each block's sample ids) and the blocks
the actors reported written; the trainers' ledger of ids trained fresh in each step of the surviving history
(``student.id_ledger``); and the dead letters' ids (or their block, by put key). ``report.json`` and
``chaos_report.json`` keep the result as ``ledger``:

- ``planned``: ids the run planned (``guides.num_samples``, by block); ``written``: ids in blocks the actors
  reported written;
- ``trained``: planned ids that went into an optimizer step as fresh records;
- ``dead_lettered``: planned ids (not trained) whose entry was dead-lettered;
- ``lost`` = planned - trained - dead_lettered, and ``lost_blocks``, the blocks they came from;
- ``trained_twice``: ids trained fresh in more than one step (replay reuse is not counted);
- ``left_pending``: records of entries still pending in the store when the run ended.

``failures`` says what makes a run fail: any lost id, any record left pending, or more ids trained twice
than one batch per fault that landed.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from guide_store.errors import ClusterError

__all__ = ["build_ledger", "failures", "LedgerError"]

_BLOCK_KEY = re.compile(r"^block-(\d+)$")


class LedgerError(ClusterError, RuntimeError):
    """The run finished but its ledger shows records lost, left pending or trained twice too often."""


def _ids(runs) -> list[int]:
    return [i for start, count in runs for i in range(int(start), int(start) + int(count))]


def build_ledger(
    plan: dict, written: dict, trained: list[tuple[int, int, list]], dead_letters: list[dict], pending_ids: list[int]
) -> dict:
    """``plan``: block -> ``[start, count]`` of its ids; ``written``: the blocks the actors reported written;
    ``trained``: ``(rank, step, id runs)`` of the surviving history; ``dead_letters``: the store's dead letters
    (``ids`` as JSON runs, ``key`` the put key); ``pending_ids``: sample ids of entries still pending."""
    plan = {int(b): run for b, run in plan.items()}
    block_of = {i: b for b, run in plan.items() for i in _ids([run])}
    planned = set(block_of)
    counts = Counter(i for _, _, runs in trained for i in _ids(runs))
    dead: set[int] = set()
    for letter in dead_letters:
        if letter.get("ids"):
            dead.update(_ids(json.loads(letter["ids"])))
        elif (m := _BLOCK_KEY.match(str(letter.get("key", "")))) and int(m.group(1)) in plan:
            dead.update(_ids([plan[int(m.group(1))]]))  # undecodable: its ids are its block's
    trained_ids = planned & set(counts)
    dead_ids = (planned & dead) - trained_ids
    lost = planned - trained_ids - dead_ids
    written_ids = {i for b in map(int, written) if b in plan for i in _ids([plan[b]])}
    return {
        "planned": len(planned),
        "written": len(written_ids),
        "trained": len(trained_ids),
        "dead_lettered": len(dead_ids),
        "lost": len(lost),
        "trained_twice": sum(1 for c in counts.values() if c > 1),
        "left_pending": len(pending_ids),
        "trained_unplanned": len(set(counts) - planned),
        "lost_blocks": sorted({block_of[i] for i in lost}),
    }


def failures(ledger: dict, faults_landed: int, batch_size: int) -> list[str]:
    """Why the ledger fails the run (empty: it does not)."""
    out = []
    if ledger["lost"]:
        out.append(
            f"{ledger['lost']} of {ledger['planned']} planned records were neither trained nor dead-lettered "
            f"(lost), from blocks {ledger['lost_blocks']}"
        )
    if ledger["left_pending"]:
        out.append(f"{ledger['left_pending']} records were left pending in the guide store")
    allowed = batch_size * faults_landed
    if ledger["trained_twice"] > allowed:
        out.append(
            f"{ledger['trained_twice']} records were trained fresh twice, more than one batch ({batch_size}) "
            f"per fault that landed ({faults_landed})"
        )
    return out
