"""Evaluate and sample a teacher checkpoint: quality against NFE, and sample figures."""

from __future__ import annotations

from pathlib import Path

import torch

from cluster.config import parse_config
from student.evaluation import QualitySettings, evaluate_sampler, noise_for_eval
from teachers.checkpoint import CheckpointError, load_checkpoint
from teachers.data import DataSplit
from teachers.solvers import SOLVERS, Solution, solve
from teachers.train_teacher import load_run_data

__all__ = ["load_teacher_and_data", "teacher_sampler", "evaluate_teacher", "sample_teacher"]


def load_teacher_and_data(checkpoint: str | Path) -> tuple[torch.nn.Module, DataSplit, dict]:
    """The network, the data it was trained on (from the configuration it records) and that configuration."""
    model, meta = load_checkpoint(checkpoint)
    if not meta.training:
        raise CheckpointError(f"{Path(checkpoint) / 'model.json'}: records no training configuration; "
                              "cannot tell which data to evaluate against")
    cfg = parse_config(meta.training, source=f"{checkpoint}/model.json:training")
    data = load_run_data(cfg)
    if data.data_shape != tuple(meta.data_shape):
        raise CheckpointError(f"{Path(checkpoint) / 'model.json'}: data_shape {meta.data_shape} does not match "
                              f"its data {list(data.data_shape)}")
    return model, data, meta.training


def teacher_sampler(model: torch.nn.Module, solver: str):
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {list(SOLVERS)}")

    def sample(noise: torch.Tensor, steps: int | None) -> Solution:
        return solve(model, noise, 0.0, 1.0, steps or 1, solver)

    return sample


def evaluate_teacher(checkpoint: str | Path, steps: list[int], solver: str, settings: QualitySettings,
                     echo=print) -> dict:
    """Quality table of a teacher checkpoint for each step count (one row for ``adaptive``)."""
    model, data, _ = load_teacher_and_data(checkpoint)
    step_list: list[int | None] = [None] if solver == "adaptive" else list(steps)
    table = evaluate_sampler(teacher_sampler(model, solver), data, step_list, settings,
                             label=f"teacher/{solver}", progress=echo)
    table.update({"checkpoint": str(checkpoint), "solver": solver, "data": data.name,
                  "metric_kind": "image" if data.is_image else "vector"})
    return table


def sample_teacher(checkpoint: str | Path, steps: list[int], solver: str, out: str | Path, n: int = 64,
                   seed: int = 0) -> Path:
    """A figure with one panel per step count (image grid or 2-D scatter) beside real data."""
    from student.plots import save_sample_figure

    model, data, _ = load_teacher_and_data(checkpoint)
    noise = noise_for_eval(n, data.data_shape, seed)
    sampler = teacher_sampler(model, solver)
    panels = {}
    for k in steps:
        sol = sampler(noise, k)
        panels[f"{solver}, {k} step{'s' if k > 1 else ''} (NFE {sol.nfe})"] = sol.x
    return save_sample_figure(panels, out, reference=data.held_out[:n])
