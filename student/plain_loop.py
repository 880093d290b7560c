"""A plain single-process PyTorch loop that trains the student: the baseline ``bezier-distill bench pipeline``
holds the student pool against (``cluster.pipeline_bench``). Pure torch: no Ray, Redis or DeepSpeed.

It does a student rank's work per step with the project's own pieces: the same network
(``build_student``, started from the teacher by ``init_from_teacher``), objective (``objective_loss``,
times drawn on the CPU from the generator), optimizer (``student_optimizer``), learning rate (``lr_at``),
gradient clipping and EMA (``update_ema``). What it leaves out is the pipeline: the records are one
tensor ``(R, n_points, *D)`` already on the device, each step draws ``batch_size`` of them uniformly with
replacement (as the replay pool does), and the loss is read only every ``log_every`` steps. bf16/fp16 run
under ``autocast`` with fp32 weights.
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch
from torch import Tensor, nn

from student.ds_config import student_optimizer
from student.networks import build_student, init_from_teacher
from student.objectives import objective_loss
from student.settings import StudentJob
from teachers.checkpoint import load_checkpoint
from teachers.precision import autocast
from teachers.schedule import ema_decay_at, update_ema

__all__ = ["plain_student", "plain_student_rate"]


def plain_student(job: StudentJob, device: torch.device) -> nn.Module:
    """The student network of ``job`` on ``device``, started from ``job.init_checkpoint`` when it names one."""
    torch.manual_seed(job.seed)
    model = build_student(job.network.arch, job.data_shape, job.network.kwargs(), job.objective.objective)
    if job.init_checkpoint:
        init_from_teacher(model, load_checkpoint(job.init_checkpoint, expect_data_shape=job.data_shape)[0])
    return model.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_student_rate(
    job: StudentJob,
    points: Sequence[Tensor],
    batch_size: int,
    steps: int,
    warmup_steps: int,
    device: torch.device,
    precision: str,
) -> dict:
    """Train ``warmup_steps`` untimed steps, then ``steps`` timed ones, on micro-batches of ``batch_size``
    records drawn from ``points`` (the control points ``[x_0, .., x_1]``, each ``(R, *D)``).

    Returns ``steps_per_second`` over all timed steps and ``interval_steps_per_second`` for each
    ``log_every`` of them (as a pool's log lines report its speed), ``records_per_second`` (= steps/s x
    ``batch_size``), the timed ``seconds``, the last loss read and the parameter count."""
    model = plain_student(job, device)
    ema = copy.deepcopy(model).float().eval().requires_grad_(False)
    optimizer = student_optimizer(job.optim, model.parameters())
    records = torch.stack([p.float() for p in points], dim=1).to(device)  # (R, n_points, *D)
    g = torch.Generator().manual_seed(job.seed)

    def step(i: int) -> Tensor:
        idx = torch.randint(0, records.shape[0], (batch_size,), generator=g).to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = job.optim.lr_at(i)
        with autocast(device, precision):
            loss = objective_loss(model, list(records[idx].unbind(dim=1)), job.objective, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), job.optim.grad_clip)
        optimizer.step()
        update_ema(ema, model, ema_decay_at(i, job.optim.ema_decay))
        return loss

    model.train()
    for i in range(warmup_steps):
        step(i)
    _sync(device)
    intervals, loss_read, done = [], float("nan"), 0
    while done < steps:
        n = min(job.saving.log_every, steps - done)
        start = time.perf_counter()
        for i in range(warmup_steps + done, warmup_steps + done + n):
            loss = step(i)
        loss_read = loss.item()  # a log line's read, which also waits for the device
        intervals.append((n, time.perf_counter() - start))
        done += n
    seconds = sum(t for _, t in intervals)
    return {
        "steps_per_second": steps / seconds,
        "records_per_second": steps * batch_size / seconds,
        "interval_steps_per_second": [round(n / t, 3) for n, t in intervals],
        "seconds": round(seconds, 3),
        "steps": steps,
        "loss": loss_read,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
