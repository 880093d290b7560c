"""``bezier-distill study CONFIG``: the variant matrix of a study, through the real pipeline, then its report.

For each seed the study trains its teacher recipes once (Ray tasks, cached in
``RUN_DIR/study-NAME/teachers/sSEED/KEY``) and evaluates them (Euler at
``eval.steps`` and adaptive, on the same noise as the students). Each variant,
objective and seed is then one run of the main job (``cluster.job.run``:
teacher actors, the Redis guide store, the DeepSpeed student pool in Ray Train)
followed by the student's evaluation, all written to
``RUN_DIR/study-NAME/runs/RUN/study_result.json``.

It resumes: a run or a teacher whose result file exists is not run again, and
an interrupted run's folder is cleared and started over. The report
(``cluster.study_report``) is rebuilt from those files every time.
"""

from __future__ import annotations

import logging
import json
import shutil
import time
from pathlib import Path

import ray
from safetensors.torch import save_file
from tqdm.auto import tqdm

from cluster.logs import quieted
from cluster.config import RunConfig, parse_config
from cluster.job import run
from cluster.nodes import local_cpus
from cluster.ray_start import start_ray
from cluster.study_config import VariantRun, load_study, teacher_config, teacher_path, work_dir
from cluster.study_claims import finalists
from cluster.study_report import write_report
from cluster.teacher_stage import teacher_training_config, train_teachers
from guide_store.atomic import replaced_atomically, write_json_atomically
from student.objectives import student_sampler
from student.run_report import reference_solver
from teachers.checkpoint import checkpoint_complete, load_checkpoint
from teachers.ensemble import TeacherSpec, load_teacher
from teachers.evaluation import (
    QualitySettings,
    evaluate_sampler,
    noise_for_eval,
    primary_metric,
    row_kind,
    teacher_straightness,
)
from teachers.guides import teacher_nfe_per_record
from teachers.models import teacher_sampler
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = ["run_study", "collect_results", "plan_runs"]

RESULT_FILE = "study_result.json"
TEACHER_EVAL_FILE = "study_eval.json"
SCREEN_FILE = "screen.json"  # a screened study's finalists, chosen once (in the study's work folder)
SAMPLES_FILE = "study_samples.safetensors"
GRID_SAMPLES = {"image": 64, "vector": 1000}


def _evaluate(sampler, cfg, seed: int, data, steps: list, label: str, out_dir: Path) -> dict:
    """Quality rows of ``sampler`` at ``steps`` plus the samples the report's grid shows (saved beside).

    ``seed`` is the study seed, not the model's training seed: every model of a seed is scored on the same
    noise against the same floor draw, so the report's comparisons are paired."""

    table = evaluate_sampler(sampler, data, steps, QualitySettings.of(cfg.eval, seed), label=label)
    noise = noise_for_eval(GRID_SAMPLES[data.kind], data.data_shape, seed)
    grid = {f"steps-{k or 'auto'}": sampler(noise, k).x.float().contiguous() for k in steps}
    out_dir.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(out_dir / SAMPLES_FILE) as tmp:
        save_file(grid, str(tmp))
    return {**table, "samples_file": str(out_dir / SAMPLES_FILE)}


def _needed(runs: list[VariantRun]) -> list[tuple[int, str]]:
    """The (seed, teacher recipe) pairs the runs use, in order."""
    return sorted({(r.seed, key) for r in runs for key in r.variant.teachers}, key=lambda p: (p[0], p[1]))


def _teacher_jobs(study, base, needed, quick) -> dict[str, RunConfig]:
    jobs = {}
    for seed, key in needed:
        path = teacher_path(study, key, seed, quick)
        if not checkpoint_complete(path):
            cfg = teacher_config(study, base, key, seed, quick)
            jobs[str(path)] = teacher_training_config(cfg, cfg.seed)
    return jobs


def _evaluate_teachers(study, base, needed, quick) -> None:
    """Each needed teacher at ``eval.steps`` (Euler), adaptive and the reference solver (``eval.reference_solver``
    at ``eval.reference_steps``), and its straightness, once (cached beside the checkpoint; an evaluation made
    before straightness was measured gets it added)."""
    for seed, key in needed:
        path = teacher_path(study, key, seed, quick)
        cfg = teacher_config(study, base, key, seed, quick)
        if (path / TEACHER_EVAL_FILE).is_file():
            done = json.loads((path / TEACHER_EVAL_FILE).read_text())
            if "straightness" not in done:
                data = load_run_data(cfg.data, cfg.seed)
                model, _ = load_checkpoint(path, expect_data_shape=data.data_shape)
                gap = teacher_straightness(model, data.data_shape, seed)
                write_json_atomically(path / TEACHER_EVAL_FILE, {**done, "straightness": gap})
            continue
        start = time.perf_counter()
        data = load_run_data(cfg.data, cfg.seed)
        model, _ = load_checkpoint(path, expect_data_shape=data.data_shape)
        train = json.loads((path / "train_report.json").read_text())
        out = {
            "key": key,
            "seed": seed,
            **_teacher_rows(model, cfg, seed, data, path),
            "rectification": train["rectification"],
            "train_seconds": train["train_seconds"],
            "eval_seconds": round(time.perf_counter() - start, 2),
        }
        write_json_atomically(path / TEACHER_EVAL_FILE, out)  # its presence means done
        log.info(f"teacher {key} seed {seed}: evaluated in {out['eval_seconds']:.0f}s")


def _teacher_rows(model, cfg: RunConfig, seed: int, data, path: Path) -> dict:
    """A teacher's rows (Euler at ``eval.steps``, adaptive, the reference solver), floor, straightness and
    sample grids (saved in ``path``), as the study's teacher table reads them."""
    table = _evaluate(teacher_sampler(model, "euler"), cfg, seed, data, list(cfg.eval.steps), "euler", path)
    adaptive = _evaluate(teacher_sampler(model, "adaptive"), cfg, seed, data, [None], "adaptive", path / "adaptive")
    reference = reference_solver(cfg.eval)
    ref_rows = (
        []
        if reference is None or reference[0] == "adaptive"
        else evaluate_sampler(
            teacher_sampler(model, reference[0]),
            data,
            reference[1],
            QualitySettings.of(cfg.eval, seed),
            label=reference[0],
            with_floor=False,
        )["rows"]
    )
    return {
        "rows": table["rows"] + adaptive["rows"],
        "reference_rows": ref_rows,
        "floor": table["floor"],
        "straightness": teacher_straightness(model, data.data_shape, seed),
        "n_samples": table["n_samples"],
        "samples_files": {"euler": table["samples_file"], "adaptive": adaptive["samples_file"]},
    }


def ensemble_key(members: tuple[str, ...]) -> str:
    """How the study names an ensemble of teacher recipes (its key in the results and its folder's name, beside
    its members'): the same for any order of the members, since the mean of their velocities is."""
    return f"ensemble-{'+'.join(sorted(members))}"


def _ensembles(runs: list[VariantRun]) -> list[tuple[int, tuple[str, ...]]]:
    """The (seed, member recipes) of every ensemble teacher the runs use, in order."""
    return sorted({(r.seed, tuple(r.variant.teachers)) for r in runs if r.variant.ensemble})


def _evaluate_ensembles(study, base, runs: list[VariantRun], quick) -> None:
    """Each ensemble teacher the runs use, evaluated as its members are (``_teacher_rows``), once per seed, so
    the teacher table shows the ensemble beside each member; its training time is its members' sum."""
    for seed, members in _ensembles(runs):
        key = ensemble_key(members)
        path = teacher_path(study, key, seed, quick)
        if (path / TEACHER_EVAL_FILE).is_file():
            continue
        start = time.perf_counter()
        cfg = teacher_config(study, base, members[0], seed, quick)
        data = load_run_data(cfg.data, cfg.seed)
        paths = [teacher_path(study, m, seed, quick) for m in members]
        model = load_teacher(TeacherSpec(tuple(str(p) for p in paths)), data.data_shape)
        trains = [json.loads((p / "train_report.json").read_text()) for p in paths]
        out = {
            "key": key,
            "seed": seed,
            "members": list(members),
            **_teacher_rows(model, cfg, seed, data, path),
            "rectification": max(t["rectification"] for t in trains),  # its most rectified member's
            "train_seconds": round(sum(t["train_seconds"] for t in trains), 2),  # the report counts members once
            "eval_seconds": round(time.perf_counter() - start, 2),
        }
        write_json_atomically(path / TEACHER_EVAL_FILE, out)  # its presence means done
        log.info(f"teacher {key} seed {seed}: evaluated in {out['eval_seconds']:.0f}s")


def _ensemble_nfe(pool, nfe: int | None) -> int | None:
    """A record's teacher evaluations counted in member networks: an ensemble's one evaluation runs each member."""
    return nfe * len(pool.checkpoints) if nfe is not None and pool.ensemble else nfe


def _run_variant(vr: VariantRun, show_bar: bool) -> dict:
    """One run of the main job for this variant, then the student's evaluation; the result file."""
    cfg = vr.cfg
    if cfg.run_path.exists():  # an interrupted attempt: start it over
        shutil.rmtree(cfg.run_path)
    start = time.perf_counter()
    with quieted():  # the study sums each run up in one line
        report = run(cfg, stop_after="student", show_bar=show_bar)
    t = time.perf_counter()
    data = load_run_data(cfg.data, cfg.seed)
    student, _ = load_checkpoint(cfg.student_path, expect_data_shape=data.data_shape)
    table = _evaluate(
        student_sampler(cfg.student.objective, student),
        cfg,
        vr.seed,
        data,
        list(cfg.student.eval_steps),
        f"student/{cfg.student.objective}",
        cfg.run_path,
    )
    g = cfg.guides
    training = report["student_training"]
    result = {
        "key": vr.key,
        "variant": vr.variant.name,
        "objective": vr.objective,
        "seed": vr.seed,
        "path": g.path,
        "coupling": g.coupling,
        "rule": g.rule if g.n_guides else None,
        "teachers": vr.variant.teachers,
        "nfe_per_record": _ensemble_nfe(
            cfg.teacher_pool[0],
            teacher_nfe_per_record(
                g.coupling_settings(),
                g.rule,
                g.n_guides,
                g.solve_solver,
                g.solve_steps,
                sum(cfg.teacher_pool[0].guides_from_coupling(g)),
            ),
        ),
        "rows": table["rows"],
        "floor": table["floor"],
        "n_samples": table["n_samples"],
        "samples_file": table["samples_file"],
        "records": report["production"]["records"],
        "distinct_pairs": report["production"]["distinct_pairs"],
        "student_steps": training["steps"],
        "student_seconds": training["seconds"],
        "records_consumed": training["consumption"]["records"],
        "consumed_twice": training["consumption"]["consumed_twice"],
        "final_loss": training["final_loss"],
        "guide_wait_s_rank0": training["guide_wait_s_rank0"],
        "run_seconds": report["timings"]["total_s"],
        "eval_seconds": round(time.perf_counter() - t, 2),
        "wall_seconds": round(time.perf_counter() - start, 2),
    }
    write_json_atomically(cfg.run_path / RESULT_FILE, result)  # its presence means done
    return result


def _with_distinct_pairs(result: dict, run_path: Path) -> dict:
    """A result made before its file kept ``distinct_pairs`` takes it from the run's own report."""
    report = run_path / "report.json"
    if "distinct_pairs" in result or not report.is_file():
        return result
    return {**result, "distinct_pairs": json.loads(report.read_text())["production"].get("distinct_pairs")}


def collect_results(study, base, runs: list[VariantRun], quick: bool, config_file: str) -> dict:
    """Everything finished so far, as the report reads it (the raw JSON the tables are made from)."""
    seeds = sorted({r.seed for r in runs})
    teachers = []
    for seed in seeds:
        for key in study.teachers:
            f = teacher_path(study, key, seed, quick) / TEACHER_EVAL_FILE
            if f.is_file():
                teachers.append({**json.loads(f.read_text()), "label": study.teachers[key].label})
    for seed, members in _ensembles(runs):
        f = teacher_path(study, ensemble_key(members), seed, quick) / TEACHER_EVAL_FILE
        if f.is_file():
            label = "ensemble of " + " + ".join(study.teachers[m].label for m in members)
            teachers.append({**json.loads(f.read_text()), "label": label})
    done = [
        _with_distinct_pairs(json.loads((r.cfg.run_path / RESULT_FILE).read_text()), r.cfg.run_path)
        for r in runs
        if (r.cfg.run_path / RESULT_FILE).is_file()
    ]
    first = runs[0].cfg
    return {
        "study": study.name,
        "config_file": config_file,
        "quick": quick,
        "seeds": seeds,
        "data": first.data.name,
        "metric_kind": load_run_data(
            first.data, first.seed
        ).kind,  # the data source's own kind, loaded as its runs load it
        "planned_runs": [r.key for r in runs],
        "runs": done,
        "teachers": teachers,
        "base": study.base,
        "settings": {
            "student_steps": first.student.steps,
            "student_batch_size": first.student.batch_size,
            "student_workers": first.student.max_workers,
            "guide_records": first.guides.num_samples,
            "eval_samples": first.eval.n_samples,
        },
        "study_config": study.model_dump(mode="json"),
        **dict(zip(("default", "default_peers"), _default_rows(study, base, runs, quick))),
    }


def _default_rows(study, base: dict, runs: list[VariantRun], quick: bool) -> tuple[str | None, list[str]]:
    """The shipped default's variant/objective (the base file's guides, objective, teacher count and teacher
    reflow rounds), if the matrix has it, and its peers: the rows whose teachers have the same reflow rounds,
    which a default can switch to without a costlier teacher (another reflow round retrains it)."""
    b = parse_config({**base, "name": "base"})
    want = (
        b.guides.path,
        b.guides.rule,
        b.guides.coupling,
        b.student.objective,
        len(b.teacher_pool[0].checkpoints),
        b.teacher_pool[0].ensemble,
    )
    rounds = {
        (v.name, seed): teacher_config(study, base, v.teachers[0], seed, quick).teacher_training.reflow_rounds
        for v in study.variants
        for seed in {r.seed for r in runs}
    }
    default, peers = None, set()
    for r in runs:
        if rounds[(r.variant.name, r.seed)] != b.teacher_training.reflow_rounds:
            continue
        peers.add(f"{r.variant.name}/{r.objective}")
        g = r.cfg.guides
        method = (g.path, g.rule, g.coupling, r.objective, len(r.variant.teachers), r.variant.ensemble)
        if default is None and method == want:
            default = f"{r.variant.name}/{r.objective}"
    return default, sorted(peers)


def _ray_up(runs: list[VariantRun]) -> bool:
    """Start a local Ray for the whole study unless one is up (or ``RAY_ADDRESS`` names a cluster)."""

    if ray.is_initialized():
        return False
    start_ray("configured", "bezier-distill", max(local_cpus(r.cfg) for r in runs))
    return True


def plan_runs(
    study, base, runs: list[VariantRun], quick: bool, config_file: str
) -> tuple[list[VariantRun], dict | None]:
    """The runs the study makes, and its screen (``None`` without one): every run of the matrix; or, with
    ``screen``, every variant at the screen's seeds, then (once those are all finished) the finalists
    (``cluster.study_claims.finalists``) at the other seeds. The finalists are chosen once and kept in
    ``SCREEN_FILE`` (chosen again only if the ``screen`` settings change). ``--quick`` screens nothing."""
    if quick or study.screen is None:
        return runs, None
    sc = study.screen
    first = [r for r in runs if r.seed in sc.seeds]
    settings = sc.model_dump(mode="json")
    info = {**settings, "finalists": None, "ranking": None}
    stored = work_dir(study, quick) / SCREEN_FILE
    saved = json.loads(stored.read_text()) if stored.is_file() else None
    if saved is not None and {k: saved.get(k) for k in settings} == settings:
        info = saved  # chosen once: a later change of code or of a screen run's files does not move it
    else:
        screened = collect_results(study, base, first, quick, config_file)
        if len(screened["runs"]) < len(first):
            return first, info
        chosen, ranking = finalists(screened, info)
        info.update(finalists=chosen, ranking=[[k, round(v, 4)] for k, v in ranking])
        write_json_atomically(stored, info)
    return first + [r for r in runs if r.seed not in sc.seeds and r.row in info["finalists"]], info


def run_study(
    path: str | Path,
    quick: bool = False,
    out_dir: str | Path | None = None,
    show_bar: bool = True,
    report_only: bool = False,
) -> dict:
    """Run (or resume) the study and write its report; returns the collected results."""

    study, base, runs = load_study(path, quick)
    out = Path(out_dir) if out_dir is not None else (work_dir(study, quick) / "report" if quick else Path("docs"))
    if not report_only:
        planned, screen = plan_runs(study, base, runs, quick, str(path))
        todo = [r for r in planned if not (r.cfg.run_path / RESULT_FILE).is_file()]
        log.info(
            f"study {study.name}{' (quick)' if quick else ''}: {len(planned)} runs"
            f"{' (the screen; finalists after it)' if screen and screen['finalists'] is None else ''}, "
            f"{len(planned) - len(todo)} done, {len(todo)} to run; work in {work_dir(study, quick)}"
        )
        needed = _needed(planned)
        started = _ray_up(runs) if todo or _teacher_jobs(study, base, needed, quick) else False
        try:
            while True:  # twice with a screen: its runs, then its finalists' (and the teachers they add)
                needed = _needed(planned)
                jobs = _teacher_jobs(study, base, needed, quick)
                if jobs:
                    log.info(f"training {len(jobs)} teacher(s)")
                    train_teachers(jobs)
                _evaluate_teachers(study, base, needed, quick)
                _evaluate_ensembles(study, base, planned, quick)
                if not todo:
                    break
                bar = tqdm(todo, desc=f"study {study.name}", unit="run", disable=not show_bar)
                for i, vr in enumerate(bar, 1):
                    result = _run_variant(vr, False)
                    first = result["rows"][0]
                    metric = "non_finite" if "non_finite" in first else primary_metric(row_kind(first))
                    log.info(
                        f"[{i}/{len(todo)}] {vr.key}: {first['steps']}-step {metric} {first[metric]:.4g}, "
                        f"{result['wall_seconds']:.0f}s"
                    )
                planned, screen = plan_runs(study, base, runs, quick, str(path))
                todo = [r for r in planned if not (r.cfg.run_path / RESULT_FILE).is_file()]
                if todo:
                    assert screen is not None  # only a screen's finalists make a second round of runs
                    log.info(f"screen finished; finalists {', '.join(screen['finalists'])}: {len(todo)} more runs")
        finally:
            if started:
                ray.shutdown()
    planned, screen = plan_runs(study, base, runs, quick, str(path))
    results = {**collect_results(study, base, planned, quick, str(path)), "screen": screen}
    write_report(results, out)
    log.info(f"study {study.name}: {len(results['runs'])}/{len(planned)} runs in the report; {out}")
    return results
