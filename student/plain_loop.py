"""A plain single-process PyTorch loop that trains the student: the baseline ``bezier-distill bench pipeline``
holds the student pool against (``cluster.pipeline_bench``). Pure torch: no Ray, Redis or DeepSpeed.

It does a student rank's work per step with the project's own pieces: the same network
(``initial_student``, started from the teacher), the same step (``train_step``: the
objective, times drawn on the CPU from the generator; backward; step) on the same optimizer
(``student_optimizer``) through ``PlainEngine``, learning rate (``lr_at``), gradient clipping and EMA
(``update_ema``). What it leaves out is the pipeline: the records are one
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
from student.networks import initial_student
from student.settings import StudentJob
from student.train_step import train_step
from teachers.precision import autocast
from teachers.schedule import ema_decay_at, update_ema

__all__ = ["plain_student", "plain_student_rate", "PlainEngine"]


class PlainEngine:
    """What ``train_step`` asks of a DeepSpeed engine, for a plain module and torch optimizer: the forward
    under ``precision``'s autocast (fp32 weights), ``backward``, and ``step``: the gradients clipped to
    ``grad_clip``, the optimizer's step, the gradients zeroed (as DeepSpeed's ``engine.step`` does)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, precision: str):
        self.module, self.optimizer, self.grad_clip, self.precision = module, optimizer, grad_clip, precision
        self.device = next(module.parameters()).device

    def __call__(self, *inputs: Tensor) -> Tensor:
        with autocast(self.device, self.precision):
            return self.module(*inputs)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def plain_student(job: StudentJob, device: torch.device) -> nn.Module:
    """The student network of ``job`` on ``device``, started from ``job.init_checkpoint`` when it names one."""
    torch.manual_seed(job.seed)
    return initial_student(job).to(device)


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
    engine = PlainEngine(model, student_optimizer(job.optim, model.parameters()), job.optim.grad_clip, precision)
    records = torch.stack([p.float() for p in points], dim=1).to(device)  # (R, n_points, *D)
    g = torch.Generator().manual_seed(job.seed)

    def step(i: int) -> Tensor:
        idx = torch.randint(0, records.shape[0], (batch_size,), generator=g).to(device, non_blocking=True)
        loss = train_step(engine, job, list(records[idx].unbind(dim=1)), g, job.optim.lr_at(i))
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
