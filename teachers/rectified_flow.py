"""Rectified flow: interpolation, loss, training loop and reflow pairs.

    X_t = t X_1 + (1 - t) X_0,   loss = E || (X_1 - X_0) - v(X_t, t) ||^2

``X_0`` is noise, ``X_1`` data. A *pair sampler* ``(batch, generator) ->
(x0, x1)`` says where pairs come from: independent noise and data
(1-rectified flow) or fixed teacher pairs ``(x0, Phi(x0))`` (reflow).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from teachers.precision import autocast
from teachers.registry import Registry
from teachers.schedule import ema_decay_at, lr_at, update_ema
from teachers.solvers import solve

__all__ = [
    "TIME_SAMPLERS",
    "sample_times",
    "rectified_flow_loss",
    "TrainSettings",
    "TrainResult",
    "train_velocity",
    "independent_pairs",
    "fixed_pairs",
    "teacher_pairs",
]

PairSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g)


def _logit_normal(n: int, g: torch.Generator) -> Tensor:
    return torch.sigmoid(torch.randn(n, generator=g))


TIME_SAMPLERS: Registry[Callable[[int, torch.Generator], Tensor]] = Registry(
    "time sampling", {"uniform": _uniform, "logit_normal": _logit_normal}
)


def sample_times(n: int, kind: str, generator: torch.Generator) -> Tensor:
    """``n`` times in ``(0, 1)`` from the named density (``uniform`` or ``logit_normal``)."""
    return TIME_SAMPLERS[kind](n, generator)


def rectified_flow_loss(model: nn.Module, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """Mean squared error between ``v(X_t, t)`` and ``X_1 - X_0``; ``x0, x1: (B, *D)``, ``t: (B,)``."""
    tt = t.view(-1, *([1] * (x0.dim() - 1)))
    xt = tt * x1 + (1 - tt) * x0
    return (model(xt, t) - (x1 - x0)).pow(2).mean()


def independent_pairs(data: Tensor) -> PairSampler:
    """Noise and data drawn independently (1-rectified flow)."""

    def sample(batch: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, data.shape[0], (batch,), generator=g)
        x1 = data[idx]
        return torch.randn(x1.shape, generator=g), x1

    return sample


def fixed_pairs(x0: Tensor, x1: Tensor) -> PairSampler:
    """Rows drawn from fixed pairs, e.g. a teacher's ``(x0, Phi(x0))`` (reflow)."""

    def sample(batch: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, x0.shape[0], (batch,), generator=g)
        return x0[idx], x1[idx]

    return sample


@torch.no_grad()
def teacher_pairs(
    model: nn.Module,
    n: int,
    data_shape: tuple[int, ...],
    solver: str,
    steps: int,
    seed: int,
    chunk: int = 4096,
    device: str = "cpu",
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """``(x0, Phi_{0->1}(x0))`` for ``n`` noise draws: the coupling a reflow round trains on. The noise is
    drawn on the CPU, the ODE solved on ``device`` (``model`` lives there) under ``precision`` autocast;
    both come back as fp32 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((n, *data_shape), generator=g)
    with autocast(torch.device(device), precision):
        x1 = torch.cat(
            [
                solve(model, x0[i : i + chunk].to(device), 0.0, 1.0, steps, solver).x.float().cpu()
                for i in range(0, n, chunk)
            ]
        )
    return x0, x1


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training run of a velocity network."""

    steps: int
    batch_size: int
    lr: float
    time_sampling: str = "uniform"
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    warmup_steps: int = 100
    log_every: int = 100
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32, or bf16/fp16 autocast (the weights stay fp32)


@dataclass
class TrainResult:
    """The EMA network (used for sampling) and the logged loss history."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_velocity(
    model: nn.Module,
    pairs: PairSampler,
    settings: TrainSettings,
    log: Callable[[dict], None] | None = None,
    desc: str = "rectified flow",
    progress: bool = True,
) -> TrainResult:
    """Fit ``model`` to the rectified-flow loss on pairs from ``pairs``; returns the EMA copy.

    Adam with linear warm-up then cosine decay; gradient-norm clipping; EMA
    whose decay ramps up as ``min(decay, (1 + k) / (10 + k))``.
    """
    g = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")  # fp16 needs loss scaling

    def lr(k: int) -> float:
        return lr_at(k, settings.lr, settings.warmup_steps, settings.steps)

    result = TrainResult(model=ema)
    start, running = time.perf_counter(), 0.0
    model.train()
    bar = tqdm(range(settings.steps), desc=desc, disable=not progress, mininterval=1.0)
    for k in bar:
        x0, x1 = pairs(settings.batch_size, g)  # drawn on the CPU: the same pairs on every device
        t = sample_times(x0.shape[0], settings.time_sampling, g)
        with autocast(device, settings.precision):
            loss = rectified_flow_loss(model, x0.to(device), x1.to(device), t.to(device))
        for group in opt.param_groups:
            group["lr"] = lr(k)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        scaler.step(opt)
        scaler.update()
        update_ema(ema, model, ema_decay_at(k, settings.ema_decay))
        running += loss.item()
        if (k + 1) % settings.log_every == 0 or k + 1 == settings.steps:
            n = (k % settings.log_every) + 1
            record = {
                "step": k + 1,
                "loss": running / n,
                "lr": lr(k),
                "elapsed_s": round(time.perf_counter() - start, 3),
            }
            running = 0.0
            result.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if log is not None:
                log(record)
    result.seconds = time.perf_counter() - start
    model.eval()
    return result
