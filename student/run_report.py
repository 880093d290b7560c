"""Evaluate a finished run: its teachers and its student on the same noise, beside the real-vs-real floor,
plus the figures a person looks at first (sample grids, the student's loss curve). No Ray."""

from __future__ import annotations

import logging
import json

import torch

from student.objectives import student_sampler
from teachers.checkpoint import load_checkpoint
from teachers.conventions import DEFAULT_CONVENTION
from teachers.device_plan import StagePlan, resolve_device
from teachers.evaluation import (
    QualitySettings,
    evaluate_sampler,
    format_metrics,
    format_row,
    noise_for_eval,
    primary_metric,
    sampler_on,
    teacher_straightness,
)
from teachers.fid_bootstrap import fid_ratio_interval
from teachers.ensemble import TeacherSpec, load_teacher
from teachers.models import teacher_sampler
from teachers.plots import save_loss_curve, save_sample_figure
from teachers.settings import EvalSettings, TeacherPoolSettings
from teachers.solvers import Sampler
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = ["evaluate_run", "evaluated_teachers", "quality_table", "teacher_best", "reference_solver"]


def evaluate_run(cfg, teacher_checkpoints: list[str], stage: StagePlan | None = None) -> dict:
    """Quality of each teacher (``teacher_checkpoints``, then each ensemble pool's ensemble:
    ``evaluated_teachers``; ``cfg.eval.solver`` at ``cfg.eval.steps``, and ``eval.reference_solver`` at
    ``eval.reference_steps``) and of the exported student (at ``cfg.student.eval_steps``, each row with its
    metric over the teachers' best: ``fid_to_teacher_best`` or ``sliced_w2_to_teacher_best``), and each
    teacher's straightness (``teachers.evaluation.teacher_straightness``, Euler x 32); writes ``samples.png`` and
    ``student_loss.png`` into the run folder.

    ``stage``: the run plan's evaluation stage (default: the plan for this machine's GPUs); sampling runs
    there under its precision, and the result's ``used`` says which device and precision that was."""
    stage = stage or resolve_device(cfg, torch.cuda.device_count()).evaluation
    device, precision = stage.place()
    data = load_run_data(cfg.data, cfg.seed)
    settings = QualitySettings.of(cfg.eval, cfg.seed, device=device.type)
    solver = cfg.eval.solver
    steps = [None] if solver == "adaptive" else list(cfg.eval.steps)
    teachers: dict[str, dict] = {}
    samplers: dict[str, Sampler] = {}
    straight: dict[str, float] = {}
    feats: dict[str, list[dict]] = {}
    for name, spec in evaluated_teachers(cfg.teacher_pool, teacher_checkpoints).items():
        path = spec.key
        model = load_teacher(spec, data.data_shape).to(device)
        samplers[path] = sampler_on(teacher_sampler(model, solver), device, precision)
        label = f"{name}/{solver}"
        log.info(f"evaluating {label} ({path}) at steps {steps}")
        feats[path] = []
        teachers[path] = evaluate_sampler(
            samplers[path], data, steps, settings, label=label, features=feats[path], with_floor=False
        )
        straight[path] = teacher_straightness(model, data.data_shape, cfg.seed, device)
        reference = reference_solver(cfg.eval)
        if reference is not None:
            ref_solver, ref_steps = reference
            log.info(f"evaluating {name}/{ref_solver} (reference) at steps {ref_steps}")
            ref_sampler = sampler_on(teacher_sampler(model, ref_solver), device, precision)
            teachers[path]["rows"] += evaluate_sampler(
                ref_sampler,
                data,
                ref_steps,
                settings,
                label=f"{name}/{ref_solver}",
                features=feats[path],
                with_floor=False,
            )["rows"]
    student, _ = load_checkpoint(cfg.student_path, expect_data_shape=data.data_shape)
    sampler = sampler_on(student_sampler(cfg.student.objective, student.to(device)), device, precision)
    log.info(f"evaluating the student at steps {cfg.student.eval_steps}")
    student_feats: list[dict] = []
    table = evaluate_sampler(
        sampler,
        data,
        cfg.student.eval_steps,
        settings,
        label=f"student/{cfg.student.objective}",
        features=student_feats,
    )

    noise = noise_for_eval(64, data.data_shape, cfg.seed)
    first = samplers[next(iter(samplers))]
    panels = {
        f"teacher {solver} 1 step": first(noise, 1).x,
        f"teacher {solver} {max(cfg.eval.steps)} steps": first(noise, max(cfg.eval.steps)).x,
    }
    for k in cfg.student.eval_steps:
        panels[f"student {k} step{'s' if k > 1 else ''}"] = sampler(noise, k).x
    save_sample_figure(panels, cfg.run_path / "samples.png", reference=data.held_out[:64])
    metrics_file = cfg.run_path / "metrics.jsonl"
    if metrics_file.is_file():
        history = [r for r in map(json.loads, metrics_file.read_text().splitlines()) if "loss" in r]
        save_loss_curve(history, cfg.run_path / "student_loss.png", title=f"{cfg.name} student loss (per log interval)")
    teacher_rows = {p: t["rows"] for p, t in teachers.items()}
    best = teacher_best(teacher_rows, primary_metric(data.kind))
    best_feats = feats[best["teacher"]][best.pop("index")]
    for row, kept in zip(table["rows"], student_feats):
        ratio = row[best["metric"]] / best["value"]
        row[f"{best['metric']}_to_teacher_best"] = round(ratio, 4)
        if kept and best_feats and settings.fid_resamples:  # FID rows: the paired bootstrap of the ratio
            row["fid_to_teacher_best_interval"] = [
                round(v, 4)
                for v in fid_ratio_interval(
                    kept["x"], best_feats["x"], kept["ref"], ratio, settings.fid_resamples, settings.seed
                )
            ]
    return {
        "metric_kind": data.kind,
        "n_samples": table["n_samples"],
        "n_reference": table["n_reference"],
        "floor": table["floor"],
        "teachers": teacher_rows,
        "teacher_best": best,
        "teacher_straightness": straight,
        "student": table["rows"],
        "used": {"device": device.type, "precision": precision},
    }


def evaluated_teachers(pools: list[TeacherPoolSettings], checkpoints: list[str]) -> dict[str, TeacherSpec]:
    """The teachers a run is evaluated with, by row name: each of ``checkpoints`` once (``teacher0``,
    ``teacher1``, ...; read in its pool's convention), then each ensemble pool's ensemble (``ensemble``,
    ``ensemble1``, ...), so a student is compared with the best of the members and the ensemble."""
    conventions = {c: p.convention for p in pools for c in p.checkpoints}
    out = {
        f"teacher{i}": TeacherSpec((path,), conventions.get(path, DEFAULT_CONVENTION))
        for i, path in enumerate(dict.fromkeys(checkpoints))
    }
    ensembles = dict.fromkeys(p.first_teacher() for p in pools if p.ensemble)
    out.update({"ensemble" + (str(j) if j else ""): spec for j, spec in enumerate(ensembles)})
    return out


def reference_solver(e: EvalSettings) -> tuple[str, list[int | None]] | None:
    """The reference solver and its steps, unless ``eval.solver`` at ``eval.steps`` already covers it."""
    solver = e.reference_solver
    if solver is None:
        return None
    steps: list[int | None] = [None] if solver == "adaptive" else [e.reference_steps]
    if solver == e.solver and (solver == "adaptive" or e.reference_steps in e.steps):
        return None
    return solver, steps


def teacher_best(teacher_rows: dict[str, list[dict]], metric: str) -> dict:
    """The teachers' best (lowest) ``metric`` over every row, any teacher, any solver: what a student is
    measured against (a student row's ``METRIC_to_teacher_best`` is its value over this one), with that row's
    interval (``interval``) when it has one, and ``index``, the row's place among its teacher's rows."""
    rows = [(path, i, r) for path, rs in teacher_rows.items() for i, r in enumerate(rs)]
    path, index, row = min(rows, key=lambda pr: pr[2][metric])
    interval = {"interval": row[f"{metric}_interval"]} if f"{metric}_interval" in row else {}
    return {
        "metric": metric,
        "value": row[metric],
        **interval,
        "label": row["label"],
        "steps": row["steps"],
        "nfe": row["nfe"],
        "teacher": path,
        "index": index,
    }


def quality_table(quality: dict) -> str:
    """The report's rows as plain text, the floor last."""
    rows = [r for rs in quality["teachers"].values() for r in rs] + quality["student"]
    lines = [format_row(r) for r in rows] + [f"{'real-vs-real floor':<37} {format_metrics(quality['floor'])}"]
    best = quality.get("teacher_best")
    if best:
        iv = f" [{best['interval'][0]:.4g}, {best['interval'][1]:.4g}]" if best.get("interval") else ""
        lines.append(
            f"teachers' best {best['metric']}: {best['value']:.4g}{iv} ({best['label']}, {best['nfe']} NFE); "
            "the student rows' *_to_teacher_best divide by it"
        )
    if any("fid_interval" in r for r in rows):
        lines.append(
            "[low, high]: 95% bootstrap intervals over the evaluation draws (generated and held-out "
            "features resampled; a ratio's resamples paired)"
        )
    for i, (path, gap) in enumerate(quality.get("teacher_straightness", {}).items()):
        rows = quality["teachers"].get(path)
        name = rows[0]["label"].split("/")[0] if rows else f"teacher{i}"  # teacher{i} or ensemble
        lines.append(f"{name} straightness (mean squared gap, trajectory to chord; 0 = straight): {gap:.4g}")
    return "\n".join(lines)
