"""The main job: ``bezier-distill run CONFIG`` = ``python -m cluster.job CONFIG [--set KEY=VALUE ...]``.

This is what ``ray job submit --working-dir . -- python -m cluster.job configs/digits.yaml``
runs. With ``RAY_ADDRESS`` set (as it is under ``ray job submit``) it joins
that cluster; without, it starts a local Ray, so the same command works on a
laptop. End to end it:

1. trains the configured teachers whose checkpoints are missing (Ray tasks, in
   parallel; cached in the run folder);
2. starts the guide store (the run's embedded Redis when no ``store.url``), the
   controller and the teacher actors;
3. trains the student pool (Ray Train + DeepSpeed) on the guides as they come;
4. evaluates the teachers and the student (``teachers.evaluation``) and writes
   ``runs/NAME/``: ``config.yaml``, ``metrics.jsonl``, ``report.json``,
   ``production.json``, ``samples.png``, ``student_loss.png`` and ``student/``.

``--stop-after guides`` ends after step 2 (guide production only).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

from cluster.config import public_config, redact_url
from cluster.paths import resolve_run_paths
from cluster.preflight import PreflightError, dashboard_address_error, preflight

__all__ = ["main", "run", "resolve_teachers", "run_production", "own_teacher_paths", "teacher_raw", "train_teachers",
           "stages_used"]

STAGES = ("guides", "student", "eval")


def own_teacher_paths(cfg) -> dict[str, tuple[Path, int]]:
    """The run's own teachers that its pools refer to: ``self`` (``RUN/teacher``, seed ``seed``) and
    ``self:K`` (``RUN/teacher-K``, seed ``seed + K``: another teacher of the same recipe, for multi-teacher
    runs). Maps each reference to its directory and training seed."""
    refs = {c for p in cfg.teachers for c in p.checkpoints if c == "self" or c.startswith("self:")}
    if not cfg.teachers:  # no pools configured: one pool on the run's own teacher
        refs = {"self"}
    out = {}
    for ref in sorted(refs):
        if ref == "self":
            out[ref] = (cfg.teacher_path, cfg.seed)
            continue
        k = ref.split(":", 1)[1]
        if not k.isdigit() or int(k) < 1:
            from cluster.config import ConfigError

            raise ConfigError(f"teachers: checkpoint {ref!r}: expected self or self:K with K >= 1")
        out[ref] = (cfg.run_path / f"teacher-{int(k)}", cfg.seed + int(k))
    return out


def teacher_raw(cfg, seed: int) -> dict:
    """The configuration a teacher of this run trains with: another training seed, the run's data split (so
    a second teacher never trains on the images the run holds out for evaluation)."""
    raw = cfg.model_dump(mode="json")
    raw["data"]["split_seed"] = cfg.data.split_seed_for(cfg.seed)
    return {**raw, "seed": seed}


def train_teachers(jobs: dict[str, dict], echo=print, stage=None) -> float:
    """Train teachers ``{out_dir: raw config}``: Ray tasks, at most one per core at a time, when Ray is up
    (their reported training times stay honest); in this process otherwise. ``stage``: the run plan's
    teacher-training ``StagePlan`` (its GPUs per task; default: each teacher resolves its own plan).
    Returns the wall seconds."""
    start = time.perf_counter()
    import ray

    stage_dict = stage.as_dict() if stage is not None else None
    if not ray.is_initialized():
        for out_dir, raw in jobs.items():
            _train_teacher_task(raw, out_dir, stage_dict)
        return time.perf_counter() - start
    gpus = stage.gpus if stage is not None else 0
    task, pending = ray.remote(num_cpus=1, num_gpus=gpus)(_train_teacher_task), []
    for out_dir, raw in jobs.items():
        if len(pending) >= (os.cpu_count() or 1):
            _, pending = ray.wait(pending, num_returns=1)
        pending.append(task.remote(raw, out_dir, stage_dict))
        echo(f"training teacher {out_dir}")
    ray.get(pending)
    return time.perf_counter() - start


def _train_teacher_task(raw: dict, out_dir: str, stage: dict | None = None) -> str:
    import torch

    from cluster.config import parse_config
    from teachers.device_plan import StagePlan
    from teachers.train_teacher import train_teacher

    torch.set_num_threads(1)
    train_teacher(parse_config(raw), out_dir=out_dir, progress=False, echo=lambda *_: None,
                  stage=StagePlan.from_dict(stage) if stage is not None else None)
    return out_dir


def resolve_teachers(cfg, echo=print, plan=None):
    """The run's teacher pools with ``self``/``self:K`` resolved to checkpoint paths; missing ones are trained
    first (as parallel Ray tasks when Ray is up, else here). With no pools configured, one pool on ``self``.
    With a ``plan`` (``teachers.device_plan.DevicePlan``), teachers train on its devices and each pool's
    actors ask for its GPUs (an explicit ``teachers[].num_gpus`` kept)."""
    from cluster.config import TeacherPoolConfig
    from teachers.device_plan import pool_gpus

    own = own_teacher_paths(cfg)
    missing = {ref: v for ref, v in own.items() if not (v[0] / "model.json").is_file()}
    if missing:
        echo(f"training {len(missing)} teacher(s): " + ", ".join(f"{r} -> {p}" for r, (p, _) in missing.items()))
        seconds = train_teachers({str(path): teacher_raw(cfg, seed) for path, seed in missing.values()},
                                 echo=lambda *_: None, stage=plan.teacher_training if plan else None)
        echo(f"teachers trained in {seconds:.1f}s")
    pools = cfg.teachers or [TeacherPoolConfig(name="teacher", checkpoints=["self"])]
    pools = [p.model_copy(update={"checkpoints": [str(own[c][0]) if c in own else c for c in p.checkpoints],
                                  **({"num_gpus": pool_gpus(plan, p.num_gpus)} if plan else {})})
             for p in pools]
    return cfg.model_copy(update={"teachers": pools})


def _progress(cfg, controller, echo, show_bar: bool, stop: threading.Event | None = None) -> dict:
    """Follow guide production until it is finished (or ``stop`` is set); returns the controller's report."""
    import ray
    from tqdm.auto import tqdm

    total = cfg.guides.num_samples
    bar = tqdm(total=total, desc=f"{cfg.name}: guides", unit="rec", disable=not show_bar, position=0)
    last_check, report = time.monotonic(), {}
    try:
        while True:
            report = ray.get(controller.report.remote())
            bar.n = min(report["store"]["produced"], total)
            bar.set_postfix(teachers=report["live_teachers"], backlog=report["store"]["backlog"])
            bar.refresh()
            if report["finished"] or (stop is not None and stop.is_set()):
                return report
            if time.monotonic() - last_check > 10:
                dead = ray.get(controller.check_workers.remote())
                if dead:
                    echo(f"teacher actors gone for good: {dead}; their blocks are handed out again")
                last_check = time.monotonic()
                if not any(w["state"] in ("running", "starting") for w in report["workers"].values()):
                    raise RuntimeError(f"no teacher actor is running and {report['queued']} blocks remain; "
                                       "add one with: bezier-distill teachers add --checkpoint PATH")
            time.sleep(1.0)
    finally:
        bar.close()


class _Production:
    """Guide production followed on a background thread while the student pool trains."""

    def __init__(self, cfg, controller, echo, show_bar: bool):
        self.stop, self.report, self.error = threading.Event(), {}, None
        self.thread = threading.Thread(target=self._follow, args=(cfg, controller, echo, show_bar), daemon=True)

    def _follow(self, cfg, controller, echo, show_bar) -> None:
        try:
            self.report = _progress(cfg, controller, echo, show_bar, self.stop)
        except Exception as err:  # surfaced by the main thread after the student pool returns
            self.error = err

    def __enter__(self) -> "_Production":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _stop_teachers(controller, report: dict) -> None:
    import ray

    for name in list(ray.get(controller.list_teachers.remote())):
        if report.get("workers", {}).get(name, {}).get("state") not in ("removed", "dead"):
            ray.get(controller.remove_teacher.remote(name, True))
    ray.kill(controller)


def _clear_previous_attempt(cfg, url: str, echo) -> None:
    """A run starts from an empty stream: a student pool never resumes across jobs, and the guides of an
    earlier attempt (same seed, so the same bits) would only be skipped as duplicates by the producers."""
    from guide_store.redis_store import RedisGuideStore

    store = RedisGuideStore(url, cfg.name)
    try:
        stats = store.stats()
        if stats["produced"] or stats["stream_entries"] or stats["dead_entries"]:
            echo(f"run {cfg.name}: clearing {stats['produced']} guide records of an earlier attempt from the store "
                 f"({stats['acknowledged']} acknowledged, {stats['backlog']} not)")
            store.delete_run()
    finally:
        store.close()


def _student_init(cfg, echo) -> str | None:
    """The checkpoint the student starts from: the first teacher with ``student.init: teacher``, unless that
    is a diffusers model (a student is a ``teachers.nets`` network), which starts from scratch."""
    from teachers.models import model_kind

    if cfg.student.init != "teacher":
        return None
    first = cfg.teachers[0].checkpoints[0]
    if model_kind(first) == "diffusers":
        net = cfg.student.network or cfg.teacher.network
        echo(f"student.init is teacher, but the first teacher {first} is a diffusers model: the student starts from "
             f"scratch as a {net.arch} network (student.network, else teacher.network)")
        return None
    return first


def _produce_and_train(cfg, url: str | None, stop_after: str, echo, show_bar: bool,
                       data_shape: tuple[int, ...], plan=None) -> tuple[dict, dict | None]:
    """Teacher actors fill the store while the student pool consumes it; returns (production, training)."""
    import ray

    from cluster.controller_actor import start_controller
    from cluster.student_pool import run_student_pool

    init = _student_init(cfg, echo)
    if cfg.student.source == "parquet":
        return {}, run_student_pool(cfg, None, data_shape, init, echo, plan)
    start = time.perf_counter()
    _clear_previous_attempt(cfg, url, echo)
    controller = start_controller(cfg, url)
    workers = ray.get(controller.start_pools.remote())
    echo(f"run {cfg.name}: {len(workers)} teacher actor(s) {workers}, store {redact_url(url)}")
    training = None
    try:
        if stop_after == "guides":
            report = _progress(cfg, controller, echo, show_bar)
        else:
            with _Production(cfg, controller, echo, show_bar) as production:
                training = run_student_pool(cfg, url, data_shape, init, echo, plan)
                production.stop.set()
            if production.error is not None:
                raise production.error
            report = ray.get(controller.report.remote())
    finally:
        _stop_teachers(controller, ray.get(controller.report.remote()))
    seconds = time.perf_counter() - start
    store = report["store"]
    out = {"run": cfg.name, "seconds": round(seconds, 2), "records": store["produced"],
           "records_per_second": round(store["produced"] / seconds, 1), "store": store,
           "workers": report["workers"], "guides": cfg.guides.model_dump(mode="json")}
    (cfg.run_path / "production.json").write_text(json.dumps(out, indent=2))
    echo(f"produced {store['produced']} guide records in {seconds:.1f}s; acknowledged {store['acknowledged']}, "
         f"dead-lettered {store['dead_lettered']}, backlog {store['backlog']}")
    return out, training


def local_cpus(cfg) -> int:
    """Logical CPUs for a local Ray: at least what the teacher actors and student workers ask for together,
    since both run at once (each with its own few threads, so a small machine is shared, not deadlocked)."""
    teachers = sum(p.replicas * p.num_cpus for p in cfg.teachers) if cfg.teachers else 1
    students = cfg.student.workers * cfg.student.cpus_per_worker
    return max(os.cpu_count() or 1, int(teachers + students + 0.999))


def check_shared_run_dir(run_path: Path, echo=print, timeout_s: float = 60.0) -> list[str]:
    """On a cluster of several nodes, warn for each node that cannot see the run directory (it must be
    shared storage: student workers and teacher actors there read checkpoints from it). Returns the IPs of
    the nodes that cannot; an empty list on one node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here and n.get("Resources", {}).get("CPU")]
    if not others:
        return []
    token = secrets.token_hex(8)
    marker = run_path / ".shared-check"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(_sees_marker)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(marker), token): n["NodeManagerAddress"] for n in others}
        done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        for ref in pending:
            ray.cancel(ref, force=True)
        seen = set()
        for ref in done:
            try:
                if ray.get(ref):
                    seen.add(refs[ref])
            except ray.exceptions.RayError:
                pass
        blind = sorted(set(refs.values()) - seen)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        echo(f"warning: the run directory {run_path} is not visible from node(s) {', '.join(blind)}; on several "
             "nodes run_dir must be shared storage (NFS, a mounted bucket), or workers there will not find the "
             "teachers and checkpoints")
    return blind


def _sees_marker(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def run(cfg, stop_after: str = "eval", echo=print, show_bar: bool = True) -> dict:
    """The whole pipeline (see the module docstring); returns the run report (also ``RUN/report.json``)."""
    import ray

    from cluster.config import dump_config
    from teachers.device_plan import resolve_device
    from cluster.provenance import provenance
    from guide_store.open_store import run_redis_url
    from student.run_report import evaluate_run, quality_table
    from teachers.models import model_data_shape

    if stop_after not in STAGES:
        raise ValueError(f"unknown stage {stop_after!r}; known: {list(STAGES)}")
    start = time.perf_counter()
    cfg = resolve_run_paths(cfg)  # a no-op for configs from load_config; API callers may pass relative ones
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    (cfg.run_path / "config.yaml").write_text(dump_config(cfg))
    echo(f"run {cfg.name}: writing to {cfg.run_path}")
    started_ray = not ray.is_initialized()
    wrong_address = dashboard_address_error(os.environ.get("RAY_ADDRESS")) if started_ray else None
    if wrong_address:
        raise PreflightError(wrong_address)
    if started_ray:
        ray.init(address=os.environ.get("RAY_ADDRESS"), namespace=cfg.namespace, log_to_driver=False,
                 **({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": local_cpus(cfg)}))
    timings = {}
    teacher_seeds = {str(path): seed for path, seed in own_teacher_paths(cfg).values()}
    try:
        plan = resolve_device(cfg, ray.cluster_resources().get("GPU", 0))  # a ConfigError before any work
        check_shared_run_dir(cfg.run_path, echo)
        preflight(cfg, plan, echo)
        store_url, cfg = cfg.store.url, public_config(cfg)  # the password goes to the store only, never to files
        t = time.perf_counter()
        cfg = resolve_teachers(cfg, echo, plan)
        timings["teachers_s"] = round(time.perf_counter() - t, 2)
        data_shape = model_data_shape(cfg.teachers[0].checkpoints[0])
        t = time.perf_counter()
        with run_redis_url(cfg.name, cfg.redis_path, store_url, fsync=cfg.store.fsync) as url:
            production, training = _produce_and_train(cfg, url, stop_after, echo, show_bar, data_shape, plan)
        timings["guides_and_student_s"] = round(time.perf_counter() - t, 2)
    finally:
        if started_ray:
            ray.shutdown()
    report = {"run": cfg.name, "stop_after": stop_after, "production": production, "student_training": training}
    if stop_after == "eval":
        t = time.perf_counter()
        echo("evaluating teachers and student ...")
        report["quality"] = evaluate_run(cfg, [p.checkpoints[0] for p in cfg.teachers]
                                         + [c for p in cfg.teachers for c in p.checkpoints[1:]], echo,
                                         plan.evaluation)
        timings["eval_s"] = round(time.perf_counter() - t, 2)
        echo(quality_table(report["quality"]))
    timings["total_s"] = round(time.perf_counter() - start, 2)
    report["timings"] = timings
    report["device_plan"] = plan.as_dict()
    report["stages"] = stages_used(cfg, report)
    report["provenance"] = provenance(cfg, teacher_seeds)
    report["config"] = cfg.model_dump(mode="json")
    if stop_after != "guides":
        (cfg.run_path / "report.json").write_text(json.dumps(report, indent=2))
        echo(f"run {cfg.name} finished in {timings['total_s']:.0f}s; results in {cfg.run_path} "
             f"(report: {cfg.run_path / 'report.json'})")
    return report


def stages_used(cfg, report: dict) -> dict:
    """The device and precision each stage actually used: teacher training (from each teacher's
    ``train_report.json``; ``None`` for a teacher trained elsewhere), guide production (per teacher actor),
    the student (its ranks' parameter dtype too) and evaluation. Takes evaluation's ``used`` out of the
    quality table."""
    teachers = {}
    for path in dict.fromkeys(c for p in cfg.teachers for c in p.checkpoints):
        train_report = Path(path) / "train_report.json"
        used = json.loads(train_report.read_text()) if train_report.is_file() else {}
        teachers[path] = {k: used[k] for k in ("device", "precision") if k in used} or None
    workers = (report.get("production") or {}).get("workers", {})
    training = report.get("student_training") or {}
    return {"teacher_training": teachers,
            "guides": {name: {k: w.get(k) for k in ("device", "precision")} for name, w in workers.items()},
            "student": {k: training.get(k) for k in ("device", "precision", "parameter_dtype", "workers")},
            "evaluation": report.get("quality", {}).pop("used", None)}


def run_production(cfg, echo=print, show_bar: bool = True) -> dict:
    """Guide production only (``--stop-after guides``); returns the production report."""
    return run(cfg, "guides", echo, show_bar)["production"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stop-after", choices=STAGES, default="eval",
                        help="guides: production only; student: train, skip evaluation; eval: everything")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    from cluster.config import ConfigError, load_config
    from teachers.checkpoint import CheckpointError
    from teachers.data import DataError

    try:
        cfg = load_config(args.config, args.overrides)
        run(cfg, args.stop_after, show_bar=not args.no_progress)
    except (ConfigError, CheckpointError, DataError, PreflightError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
