"""Make a k-rectified teacher from a run configuration and write its checkpoint.

Round 1 fits noise-to-data with independent pairs; each reflow round then
solves the previous teacher's ODE for fresh noise and fits the next teacher
(initialised from the previous one) to those pairs. The checkpoint records the
whole resolved configuration, so evaluation can rebuild the data it needs.
"""

from __future__ import annotations

import logging
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch

from guide_store.atomic import write_json_atomically, write_text_atomically
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from teachers.data import DataSplit, load_data
from teachers.device_plan import PlanRequest, StagePlan, resolve_device
from teachers.nets import build_network
from teachers.plots import save_loss_curve
from teachers.settings import DataSettings, TeacherTrainingSettings
from teachers.rectified_flow import TrainSettings, fixed_pairs, independent_pairs, teacher_pairs, train_velocity

log = logging.getLogger(__name__)

__all__ = ["TeacherRun", "load_run_data", "train_teacher"]


class TeacherRun(PlanRequest, Protocol):
    """What teacher training reads of a run's configuration: the plan's settings (``PlanRequest``), the run's
    seed, its ``data`` and ``teacher`` (teacher training) sections, and where the teacher goes."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def seed(self) -> int: ...

    @property
    def data(self) -> DataSettings: ...

    @property
    def teacher_training(self) -> TeacherTrainingSettings: ...

    @property
    def teacher_path(self) -> Path: ...

    def dump(self) -> str:
        """The configuration as YAML, password masked (what a run records in its folder)."""

    def model_dump(self, *, mode: str) -> dict[str, Any]:
        """The configuration as plain data, keyed as in YAML (a checkpoint's ``training``)."""


def load_run_data(d: DataSettings, run_seed: int) -> DataSplit:
    """The data a run's ``data`` section names (split with ``run_seed`` unless it sets its own split seed)."""
    return load_data(
        d.name,
        n_train=d.n_train,
        n_held_out=d.n_held_out,
        seed=d.split_seed_for(run_seed),
        path=d.path,
        key=d.key,
        data_shape=tuple(d.shape) if d.shape else None,
        held_out_fraction=d.held_out_fraction,
    )


def train_teacher(
    cfg: TeacherRun,
    out_dir: str | Path | None = None,
    data: DataSplit | None = None,
    progress: bool = True,
    stage: StagePlan | None = None,
) -> Path:
    """Train a ``1 + reflow_rounds``-rectified teacher; write checkpoint, metrics.jsonl, report and loss plot.

    ``stage`` is the run plan's teacher-training stage (default: the plan for this machine's GPUs); the
    device and precision actually used are recorded in ``train_report.json`` and ``model.json``."""
    stage = stage or resolve_device(cfg, torch.cuda.device_count()).teacher_training
    device, precision = stage.place()
    out = Path(out_dir) if out_dir is not None else cfg.teacher_path
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_run_data(cfg.data, cfg.seed)
    tc = cfg.teacher_training
    torch.manual_seed(cfg.seed)
    model = build_network(tc.network.arch, data.data_shape, **tc.network.kwargs())
    settings = TrainSettings(
        steps=tc.steps,
        batch_size=tc.batch_size,
        lr=tc.lr,
        time_sampling=tc.time_sampling,
        ema_decay=tc.ema_decay,
        grad_clip=tc.grad_clip,
        warmup_steps=tc.warmup_steps,
        log_every=tc.log_every,
        seed=cfg.seed,
        device=device.type,
        precision=precision,
    )
    write_text_atomically(out / "config.yaml", cfg.dump())
    metrics_file = (out / "metrics.jsonl").open("w")
    history: list[dict] = []
    rounds: list[dict] = []
    start = time.perf_counter()
    try:
        # ema: each round's EMA network (the next round's teacher); the loop runs at least once
        pairs, ema = independent_pairs(data.train), model
        for k in range(1, tc.reflow_rounds + 2):
            if k > 1:
                t0 = time.perf_counter()
                x0, x1 = teacher_pairs(
                    ema,
                    tc.reflow_pairs,
                    data.data_shape,
                    tc.reflow_solver,
                    tc.reflow_solver_steps,
                    seed=cfg.seed + 7919 * k,
                    device=device.type,
                    precision=precision,
                )
                log.info(
                    f"reflow round {k}: {tc.reflow_pairs} pairs from the {k - 1}-rectified teacher "
                    f"({tc.reflow_solver}, {tc.reflow_solver_steps} steps) in {time.perf_counter() - t0:.1f}s"
                )
                pairs = fixed_pairs(x0, x1)
                model.load_state_dict(ema.state_dict())
                settings = replace(settings, steps=tc.reflow_steps or tc.steps, seed=settings.seed + k)

            def metrics(record: dict, k: int = k) -> None:
                record = {"round": k, **record}
                history.append(record)
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()

            result = train_velocity(model, pairs, settings, log=metrics, desc=f"teacher {k}-RF", progress=progress)
            ema = result.model
            rounds.append({"rectification": k, "seconds": round(result.seconds, 2), "final_loss": history[-1]["loss"]})
    finally:
        metrics_file.close()
    ema.cpu()
    used = {"device": device.type, "precision": precision}
    meta = CheckpointMeta(
        arch=tc.network.arch,
        arch_kwargs=tc.network.kwargs(),
        data_shape=list(data.data_shape),
        role="teacher",
        data_name=data.name,
        rectification=tc.reflow_rounds + 1,
        training=cfg.model_dump(mode="json"),
        extra={"trained_with": used},
    )
    save_checkpoint(out, ema, meta)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in ema.parameters())
    report = {
        "checkpoint": str(out),
        "rectification": tc.reflow_rounds + 1,
        "parameters": params,
        "train_seconds": round(seconds, 2),
        "rounds": rounds,
        "data": data.name,
        "data_shape": list(data.data_shape),
        "n_train": int(data.train.shape[0]),
        **used,
    }
    write_json_atomically(out / "train_report.json", report)
    save_loss_curve(
        [{"step": i + 1, "loss": r["loss"]} for i, r in enumerate(history)],
        out / "loss.png",
        title=f"{data.name} teacher loss (per log interval)",
    )
    log.info(f"teacher written to {out} ({params} parameters, {seconds:.1f}s, {device.type}, {precision})")
    return out
