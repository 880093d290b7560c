"""Evaluate a finished run: its teachers and its student on the same noise, beside the real-vs-real floor,
plus the figures a person looks at first (sample grids, the student's loss curve). No Ray."""

from __future__ import annotations

import json

import torch

from student.objectives import student_sampler
from teachers.checkpoint import load_checkpoint
from teachers.conventions import DEFAULT_CONVENTION
from teachers.device_plan import StagePlan, resolve_device
from teachers.evaluation import QualitySettings, evaluate_sampler, format_row, noise_for_eval, sampler_on
from teachers.models import load_velocity, teacher_sampler
from teachers.plots import save_loss_curve, save_sample_figure
from teachers.train_teacher import load_run_data

__all__ = ["evaluate_run", "quality_table"]


def evaluate_run(cfg, teacher_checkpoints: list[str], echo=print, stage: StagePlan | None = None) -> dict:
    """Quality of each teacher (``cfg.eval.solver`` at ``cfg.eval.steps``) and of the exported student (at
    ``cfg.student.eval_steps``); writes ``samples.png`` and ``student_loss.png`` into the run folder.

    ``stage``: the run plan's evaluation stage (default: the plan for this machine's GPUs); sampling runs
    there under its precision, and the result's ``used`` says which device and precision that was."""
    stage = stage or resolve_device(cfg, torch.cuda.device_count()).evaluation
    device, precision = stage.place()
    data = load_run_data(cfg)
    settings = QualitySettings.of(cfg, device=device.type)
    solver = cfg.eval.solver
    steps = [None] if solver == "adaptive" else list(cfg.eval.steps)
    teachers, samplers = {}, {}
    conventions = {c: p.convention for p in cfg.teachers for c in p.checkpoints}
    for i, path in enumerate(dict.fromkeys(teacher_checkpoints)):
        model = load_velocity(path, data.data_shape, conventions.get(path, DEFAULT_CONVENTION)).to(device)
        samplers[path] = sampler_on(teacher_sampler(model, solver), device, precision)
        label = f"teacher{i}/{solver}"
        echo(f"evaluating {label} ({path}) at steps {steps}")
        teachers[path] = evaluate_sampler(samplers[path], data, steps, settings, label=label)
    student, _ = load_checkpoint(cfg.student_path, expect_data_shape=data.data_shape)
    sampler = sampler_on(student_sampler(cfg.student.objective, student.to(device)), device, precision)
    echo(f"evaluating the student at steps {cfg.student.eval_steps}")
    table = evaluate_sampler(sampler, data, cfg.student.eval_steps, settings, label=f"student/{cfg.student.objective}")

    noise = noise_for_eval(64, data.data_shape, cfg.seed)
    first = samplers[next(iter(samplers))]
    panels = {f"teacher {solver} 1 step": first(noise, 1).x,
              f"teacher {solver} {max(cfg.eval.steps)} steps": first(noise, max(cfg.eval.steps)).x}
    for k in cfg.student.eval_steps:
        panels[f"student {k} step{'s' if k > 1 else ''}"] = sampler(noise, k).x
    save_sample_figure(panels, cfg.run_path / "samples.png", reference=data.held_out[:64])
    metrics_file = cfg.run_path / "metrics.jsonl"
    if metrics_file.is_file():
        history = [r for r in map(json.loads, metrics_file.read_text().splitlines()) if "loss" in r]
        save_loss_curve(history, cfg.run_path / "student_loss.png", title=f"{cfg.name} student loss (per log interval)")
    return {"metric_kind": "image" if data.is_image else "vector", "n_samples": table["n_samples"],
            "n_reference": table["n_reference"], "floor": table["floor"],
            "teachers": {p: t["rows"] for p, t in teachers.items()}, "student": table["rows"],
            "used": {"device": device.type, "precision": precision}}


def quality_table(quality: dict) -> str:
    """The report's rows as plain text, the floor last."""
    rows = [r for rs in quality["teachers"].values() for r in rs] + quality["student"]
    floor = "  ".join(f"{k}={v:.4g}" for k, v in quality["floor"].items())
    return "\n".join([format_row(r) for r in rows] + [f"{'real-vs-real floor':<37} {floor}"])

