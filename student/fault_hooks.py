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
- ``after_final_report``: right after the rank's final checkpoint was reported, before the pool's end.

Ray Train restarts the group (``student.max_failures``) from the latest checkpoint it registered.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["KILL_ENV", "MOMENTS", "FAULTS_DIR", "maybe_kill", "landed"]

KILL_ENV = "BEZIER_DISTILL_TEST_KILL_RANK"
MOMENTS = ("after_checkpoint", "before_final_report", "after_final_report")
FAULTS_DIR = "test-faults"
REGISTER_S = 2.0  # four polls of Ray Train's controller (0.5 s, ``cluster.student_pool``)


def maybe_kill(moment: str, asked: tuple[str, ...], rank: int, world: int, run_folder: str | Path) -> None:
    """SIGKILL this process if ``moment`` is ``asked`` for, this is the group's last rank, and it has not
    happened in this run yet."""
    if moment not in asked or rank != world - 1:
        return
    folder = Path(run_folder) / FAULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / f"killed-{moment}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    if moment == "after_checkpoint":
        time.sleep(REGISTER_S)
    os.write(fd, f"rank {rank} of {world}, pid {os.getpid()}\n".encode())
    os.fsync(fd)
    os.close(fd)
    print(f"[test fault] rank {rank} kills itself: {moment}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def landed(run_folder: str | Path) -> list[str]:
    """The moments at which a rank of this run was killed."""
    folder = Path(run_folder) / FAULTS_DIR
    return sorted(p.name.removeprefix("killed-") for p in folder.glob("killed-*")) if folder.is_dir() else []
