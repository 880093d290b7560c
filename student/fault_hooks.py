"""Test-only faults at the hard moments of a student rank's life, for the tests that show nothing is lost there.

``BEZIER_DISTILL_TEST_KILL_RANK`` in the driver's environment (off unless set; never set it in a real run) is a
comma-separated list of moments, carried to the ranks in their job (``StudentJob.test_kills``); the last rank
of the group SIGKILLs itself at each, once per run (a marker file in the run folder,
``test-faults/killed-MOMENT``, says it happened, and keeps a restarted group from doing it again):

- ``after_checkpoint``: after a checkpoint (not the final one) was reported and the previous one's deliveries
  acknowledged, once Ray Train's controller has had time to register it (``REGISTER_S``), so the group
  resumes from that checkpoint (the other rank trains on meanwhile);
- ``before_final_report``: when the rank has stopped, holding deliveries taken since a checkpoint at or past
  ``student.steps``, before its final report (the group resumes at or past ``steps``);
- ``during_final_checkpoint``: inside the write of the rank's final checkpoint, its safetensors file written
  under a temporary name and not yet renamed into place (nothing of it reported);
- ``after_final_report``: right after the rank's final checkpoint was reported, before the pool's end;
- ``hold_after_delivery:NODE_IP``: not a kill but a pause, for a test that kills a whole host: once a
  checkpoint was reported, a rank on that node takes one more delivery (pending in the store, in no
  checkpoint), claims ``test-faults/holding-RANK`` (empty), waits ``HOLD_REGISTER_S`` for the checkpoint to be
  registered, writes its node into the marker (a test kills the host only then) and sleeps up to ``HOLD_S``
  (the other ranks wait for it in their next collective); a restarted group does not pause again.

Ray Train restarts the group (``student.max_failures``) from the latest checkpoint it registered.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["KILL_ENV", "MOMENTS", "HOLD", "FAULTS_DIR", "HOLD_MARKER", "maybe_kill", "maybe_hold", "landed"]

KILL_ENV = "BEZIER_DISTILL_TEST_KILL_RANK"
MOMENTS = ("after_checkpoint", "before_final_report", "during_final_checkpoint", "after_final_report")  # the kills
HOLD = "hold_after_delivery"  # the pause, ``hold_after_delivery:NODE_IP`` for the ranks on that node only
FAULTS_DIR = "test-faults"
HOLD_MARKER = "holding"
REGISTER_S = 2.0  # four polls of Ray Train's controller (0.5 s, ``cluster.student_pool``)
HOLD_S = 300.0
HOLD_REGISTER_S = 5.0  # a report waits in the rank's queue for the controller's next poll; lost with its host before


def maybe_kill(moment: str, asked: tuple[str, ...], rank: int, world: int, run_folder: str | Path) -> None:
    """SIGKILL this process if ``moment`` is ``asked`` for, this is the group's last rank, and it has not
    happened in this run yet."""
    if moment not in asked or rank != world - 1:
        return
    if _once(
        run_folder,
        f"killed-{moment}",
        f"rank {rank} of {world}, pid {os.getpid()}",
        REGISTER_S if moment == "after_checkpoint" else 0.0,
    ):
        print(f"[test fault] rank {rank} kills itself: {moment}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _once(run_folder: str | Path, marker: str, text: str, wait_s: float) -> bool:
    """Claim ``marker`` in the run's fault folder (False: it was claimed before), wait ``wait_s``, then write
    ``text`` into it."""
    folder = Path(run_folder) / FAULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    time.sleep(wait_s)
    os.write(fd, f"{text}\n".encode())
    os.fsync(fd)
    os.close(fd)
    return True


def maybe_hold(asked: tuple[str, ...], rank: int, node: str, run_folder: str | Path, checkpointed: bool) -> None:
    """``hold_after_delivery:NODE_IP`` (module docstring): called right after the rank took a delivery; pauses a
    rank on ``NODE_IP`` once per run, when a checkpoint of it was reported before (``checkpointed``)."""
    nodes = {a.partition(":")[2] for a in asked if a.partition(":")[0] == HOLD}
    if not checkpointed or not (node in nodes or "" in nodes):
        return
    # wait first: the checkpoint before this delivery registered, so a group resumes from it
    if not _once(run_folder, f"{HOLD_MARKER}-{rank}", node, HOLD_REGISTER_S):
        return
    print(f"[test fault] rank {rank} holds a delivery no checkpoint has, for up to {HOLD_S:.0f}s", flush=True)
    time.sleep(HOLD_S)


def landed(run_folder: str | Path) -> list[str]:
    """The moments at which a rank of this run was killed."""
    folder = Path(run_folder) / FAULTS_DIR
    return sorted(p.name.removeprefix("killed-") for p in folder.glob("killed-*")) if folder.is_dir() else []
