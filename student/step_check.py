"""One real student step, as a rank of the pool would take it, on random control points: the pre-flight check
that the student's network, objective, precision and DeepSpeed engine work on a device before a run spends
minutes training teachers. Run it in a fresh process (it sets up a one-rank process group and
``DS_ACCELERATOR``): ``python -m student.step_check < SETTINGS_JSON`` prints one JSON line (the settings
come on standard input, so a password in them never shows in the process list)."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from guide_store.embedded import free_port
from student.distribution import DistributionMatching, real_images
from student.settings import StudentJob
from student.train_loop import average_grads, build_engine, student_precision
from student.train_step import train_step
from teachers.guides import path_degree
from teachers.nets import build_network
from teachers.precision import precision_dtype

__all__ = ["student_step", "checked_step", "main"]


def student_step(job: StudentJob) -> dict:
    """Build the engine exactly as ``student.train_loop`` does, for a world of one rank, and take one step of
    ``student.batch_size`` records on ``job.device`` (``cpu`` or ``cuda``); the job has no store and no
    initial checkpoint. With a distribution-matching phase (``student.finetune.steps``) a second step is one of
    the phase, its teacher a fresh network of the student's family (the real one is trained later). Returns
    the device, precision, parameter dtype, loss (and the phase step's) and seconds."""
    start = time.perf_counter()
    # a world of one rank, whatever a launcher (torchrun, SLURM) left in the environment
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
    )
    on_gpu = job.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("the run's student computes on a GPU, but none is visible to this process")
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported
        torch.set_num_threads(1)

    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    precision = student_precision(job, device)
    dtype = precision_dtype(precision)
    engine, _ = build_engine(job, 1, device, precision)
    g = torch.Generator().manual_seed(0)
    shape = (job.optim.batch_size, *job.data_shape)
    points = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(path_degree(job.path) + 1)]
    # the rate the optimizer starts with (``student.lr``), for both steps: the check asks whether a step runs
    # and gives a finite loss, which the learning rate of that one step does not change
    loss = train_step(engine, job, points, g, job.optim.lr)
    value = _finite(loss, "the student's first loss")
    phase = None
    if job.dm_phase.steps:
        teacher = build_network(job.network.arch, job.data_shape, **job.network.kwargs())
        dm = DistributionMatching(teacher, job.dm_phase, device, average_grads, real_images(job.real_data, job.seed))
        loss = train_step(engine, job, points, g, job.optim.lr, dm)
        phase = _finite(loss, "the distribution-matching phase's first loss")
    param = next(engine.module.parameters())
    return {
        "device": str(device),
        "precision": precision,
        "dtype": str(dtype).replace("torch.", ""),
        "param_dtype": str(param.dtype).replace("torch.", ""),
        "loss": value,
        "phase_loss": phase,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _finite(loss: torch.Tensor, what: str) -> float:
    value = float(loss.detach().float())
    if not torch.isfinite(torch.tensor(value)):
        raise RuntimeError(f"{what} is {value}")
    return value


def checked_step(job: StudentJob) -> dict:
    """``student_step`` with any failure turned into ``{"ok": False, "error": ...}`` (the check's finding)."""
    try:
        return {"ok": True, **student_step(job)}
    except Exception as err:  # reported to the caller as the check's finding, with its type
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def main() -> int:
    result = checked_step(StudentJob.from_json(sys.stdin.read()))
    print("STEP_CHECK " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
