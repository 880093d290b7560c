"""The ``bezier-distill`` command line.

Global flags, before the subcommand: --quiet (warnings and errors only), --verbose (debug lines too).

Subcommands:
  run CONFIG [--set KEY=VALUE ...] [--stop-after guides|student|eval] [--no-progress] [--overwrite]   the main job
  doctor [CONFIG] [--set KEY=VALUE ...]   pre-flight: versions, devices, Ray, the store, one student step
  study STUDY [--quick] [--out DIR] [--report-only]   the variant matrix of a study, its tables and plots
  chaos CONFIG [--set KEY=VALUE ...] [--malformed N]   the job under injected faults: chaos_report.json
  status RUN_OR_RUN_DIR [--run-dir runs]   a running or finished run's student line, its actors and nodes
  train-teacher CONFIG [--set KEY=VALUE ...]   train a k-rectified teacher
  eval CHECKPOINT --steps 1,2,4,8,32 [--solver euler|heun|rk4|adaptive] [--config CONFIG] [--convention NAME]
  sample CHECKPOINT --steps 1,4,32 --out grid.png [--config CONFIG]   (CHECKPOINT: teacher, student or diffusers)
  bench pipeline (--config CONFIG | --size digits|32) [--steps N] [--workers 1,2] [--replicas 1,2,4] [--pairs 5]
                 [--json PATH] [--quick]
  bench store | teachers | guides   (= store bench, teachers bench, guides bench)
  teachers bench [--config configs/digits.yaml] [--json]
  teachers list --run RUN | add --run RUN --checkpoint PATH [--replicas N] [--role g1|g2]
           | remove NAME --run RUN [--drain]
  store export RUN --to DIR [--url URL] [--run-dir runs]
  store stats RUN [--url URL] [--run-dir runs]
  store bench [--batch-mb 1,4,16] [--pairs 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

from cluster.chaos import chaos_failures, run_chaos
from cluster.config import load_config
from cluster.controller_actor import controller_name
from cluster.exit_codes import guarded
from cluster.job import add_run_arguments, run_from_args
from cluster.logs import add_log_arguments, configure_logging, level_of, quieted
from cluster.paths import resolve_input
from cluster.pipeline_bench import BENCH_SIZES, format_bench_table, run_pipeline_bench, size_config
from cluster.preflight import (
    config_checks,
    cpus_check,
    data_shape_of,
    environment_checks,
    format_checks,
    plan_check,
    student_step_check,
    teachers_check,
)
from cluster.production_bench import run_production_bench
from cluster.progress import read_status, student_line
from cluster.study import run_study
from guide_store.atomic import write_json_atomically
from guide_store.bench import run_bench
from guide_store.embedded import FSYNC_POLICIES
from guide_store.open_store import open_run_store
from guide_store.parquet import export_store
from student.evaluate import evaluate_loaded, evaluate_teacher, load_model_and_data, sample_model
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION
from teachers.device_plan import resolve_device
from teachers.digits_features import FEATURE_EXTRACTORS
from teachers.evaluation import QualitySettings, format_table
from teachers.solvers import SOLVERS
from teachers.train_teacher import train_teacher

__all__ = ["main", "build_parser"]


def _int_list(option: str):
    """An argparse type for ``option``: comma-separated integers >= 1."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} takes comma-separated integers, got {text!r}") from None
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{option} needs counts >= 1, got {text!r}")
        return values

    return parse


_step_list = _int_list("--steps")


def _resources(text: str) -> dict[str, float]:
    """``--resources``: a JSON object of Ray custom resource names to amounts."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--resources takes a JSON object such as '{{\"teacher_host\": 1}}': {err}")
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise argparse.ArgumentTypeError(f"--resources takes a JSON object of names to amounts, got {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def _pairs(text: str) -> int:
    """``--pairs``: one integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pairs takes an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--pairs needs a count >= 1, got {text!r}")
    return value


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML configuration, e.g. configs/digits.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set teacher.lr=3e-4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bezier-distill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_log_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the main job: teachers, guide store, student pool, evaluation, report")
    add_run_arguments(p)

    p = sub.add_parser(
        "doctor",
        help="what a run will use and whether it can work: versions, devices, Ray, the "
        "store, one student step per device",
    )
    p.add_argument("config", nargs="?", help="a run configuration (without: the environment checks only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("study", help="run (or resume) a study's variant matrix and write its results and plots")
    p.add_argument("config", help="a study file, e.g. configs/study_toy2d.yaml")
    p.add_argument("--quick", action="store_true", help="the reduced study (its quick seeds and settings)")
    p.add_argument(
        "--out", help="where results.md and results/NAME/ go (default: docs; --quick: the study's work folder)"
    )
    p.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs only")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "chaos",
        help="the job under injected faults (teacher actors, a student worker and the "
        "store killed; malformed entries written) against two undisturbed runs: chaos_report.json",
    )
    _add_config_args(p)
    p.add_argument("--malformed", type=int, default=1000, help="malformed entries to write into the stream")
    p.add_argument(
        "--undisturbed",
        type=int,
        default=2,
        help="undisturbed runs to compare with (the same seed, then the next ones)",
    )

    p = sub.add_parser(
        "status",
        help="a running or finished run: its student line (step, records, speed, loss, "
        "ETA, guides, backlog), its actors and workers with their nodes",
    )
    p.add_argument("run", help="the run's name (in --run-dir) or its folder")
    p.add_argument("--run-dir", default="runs")

    p = sub.add_parser("train-teacher", help="train a rectified-flow teacher and write its checkpoint")
    _add_config_args(p)
    p.add_argument("--out", help="checkpoint directory (default: RUN_DIR/NAME/teacher)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, text in (
        (
            "eval",
            "quality against steps for any model folder (teacher, student, diffusers), with the real-vs-real floor",
        ),
        ("sample", "write a PNG of samples of any model folder at several step counts"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "checkpoint",
            help="a teacher or student checkpoint (model.json) or a diffusers save_pretrained folder (config.json)",
        )
        p.add_argument(
            "--steps",
            type=_step_list,
            default=[1, 2, 4, 8, 32] if name == "eval" else [1, 4, 32],
            help="teachers: solver steps; students: student steps",
        )
        p.add_argument(
            "--solver", choices=SOLVERS, default="euler", help="teachers only (a student samples with its own steps)"
        )
        p.add_argument(
            "--config",
            help="run configuration whose data and eval sections to use (required for a "
            "diffusers folder, which records none; replaces what a checkpoint records)",
        )
        p.add_argument(
            "--convention",
            choices=sorted(CONVENTIONS),
            default=DEFAULT_CONVENTION,
            help="how a diffusers model's time and output read as v(x, t) (default: %(default)s)",
        )
        if name == "eval":
            p.add_argument(
                "--n-samples", type=int, default=None, help="samples per row (default: the config's eval.n_samples)"
            )
            p.add_argument(
                "--feature-extractor",
                default=None,
                choices=FEATURE_EXTRACTORS,
                help="images: the config's eval.feature_extractor by default",
            )
            p.add_argument(
                "--out",
                help="JSON file for the table (default: CHECKPOINT/eval_SOLVER.json, "
                "students CHECKPOINT/eval_student.json)",
            )
        else:
            p.add_argument("--n", type=int, default=64, help="samples per panel (images) ; use more for 2-D")
            p.add_argument("--out", required=True, help="PNG path")

    bench = sub.add_parser(
        "bench", help="benchmarks: the pipeline against a plain loop, the store, teachers, guide production"
    ).add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser(
        "pipeline",
        help="the student pool and the teacher actors against a plain PyTorch loop and "
        "raw teacher inference, same run, same device; records/s and their ratios",
    )
    _add_pipeline_bench_args(p)
    _add_teachers_bench_args(bench.add_parser("teachers", help=_TEACHERS_BENCH))
    _add_guides_bench_args(bench.add_parser("guides", help=_GUIDES_BENCH))
    _add_store_bench_args(bench.add_parser("store", help=_STORE_BENCH))

    teachers = sub.add_parser("teachers", help="teacher utilities").add_subparsers(
        dest="teachers_command", required=True
    )
    _add_teachers_bench_args(teachers.add_parser("bench", help=_TEACHERS_BENCH + " (= bench teachers)"))
    for name, text in (
        ("list", "the teacher actors of a running job"),
        ("add", "start teacher actors in a running job"),
        ("remove", "stop a teacher actor of a running job"),
    ):
        p = teachers.add_parser(name, help=text + " (connects to RAY_ADDRESS; token auth as the cluster uses it)")
        p.add_argument("--run", required=True, help="the run's name (config 'name')")
        p.add_argument("--namespace", default="bezier-distill", help="the run's Ray namespace")
        if name == "add":
            p.add_argument("--checkpoint", required=True)
            p.add_argument("--replicas", type=int, default=1)
            p.add_argument("--role", choices=["g1", "g2"], help="only this guide comes from the new checkpoint")
            p.add_argument("--name", help="pool name for the new actors")
            p.add_argument(
                "--pool",
                help="the pool whose settings the new actors copy (CPUs, GPUs, resources, "
                "threads, convention; default the run's first)",
            )
            p.add_argument("--num-cpus", type=float, help="CPUs per new actor (default: the pool's)")
            p.add_argument("--num-gpus", type=float, help="GPUs per new actor (default: the pool's)")
            p.add_argument(
                "--resources",
                type=_resources,
                help="Ray custom resources per new actor as JSON, e.g. '{\"teacher_host\": 1}' (default: the pool's)",
            )
        if name == "remove":
            p.add_argument("worker", help="actor name as 'teachers list' shows it")
            p.add_argument(
                "--drain",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="finish the current block first (default); --no-drain kills it and re-issues the block",
            )

    guides = sub.add_parser("guides", help="guide production").add_subparsers(dest="guides_command", required=True)
    _add_guides_bench_args(guides.add_parser("bench", help=_GUIDES_BENCH + " (= bench guides)"))

    store = sub.add_parser("store", help="the guide store").add_subparsers(dest="store_command", required=True)
    for name, text in (
        ("export", "write a run's guide records to Parquet files"),
        ("stats", "print a run's record counts (produced, acknowledged, pending, dead-lettered)"),
    ):
        p = store.add_parser(name, help=text)
        p.add_argument("run", help="the run's name")
        p.add_argument(
            "--url", help="redis:// URL of the store (default: the run's embedded store in RUN_DIR/RUN/redis)"
        )
        p.add_argument("--run-dir", default="runs")
        if name == "export":
            p.add_argument("--to", required=True, help="output directory")
    _add_store_bench_args(store.add_parser("bench", help=_STORE_BENCH + " (= bench store)"))
    return parser


_TEACHERS_BENCH = "time a digits teacher's training and compare its quality with the floor"
_GUIDES_BENCH = "records/s from 1 and 2 teacher actors vs in-process building, same run"
_STORE_BENCH = "the store's full path against raw Redis streams, same server and sizes"


def _add_pipeline_bench_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="a run configuration, e.g. configs/digits.yaml")
    which.add_argument(
        "--size",
        choices=list(BENCH_SIZES),
        help="a preset: digits (configs/digits.yaml) or 32 "
        "(configs/bench32.yaml: 3x32x32 synthetic images, UNet 128 channels, batch 256)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, help="student steps per measurement (default: 8 log intervals; --quick 2)")
    p.add_argument(
        "--workers",
        type=_int_list("--workers"),
        help="student worker counts to measure (default 1,2; "
        "--quick: the config's); the config's own count is always measured",
    )
    p.add_argument(
        "--replicas",
        type=_int_list("--replicas"),
        help="teacher actor counts to measure (default "
        "1,2,4; --quick: the config's first pool's); the config's own count is always measured",
    )
    p.add_argument(
        "--pairs",
        type=_pairs,
        help="interleaved plain/pipeline pairs, a ratio each, reported as their "
        "median and its 90%% interval (default 5, the fewest for one; --quick 1)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="few steps and blocks, one pair: about a minute on a CPU")


def _add_teachers_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--budget-s", type=float, default=120.0, help="the time a usable teacher may take")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_guides_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--blocks", type=int, default=24)
    p.add_argument("--json", action="store_true")


def _add_store_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-mb", type=lambda t: [float(x) for x in t.split(",")], default=[1.0, 4.0, 16.0])
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per batch size")
    p.add_argument("--fsync", choices=FSYNC_POLICIES, default="everysec")
    p.add_argument(
        "--pairs",
        type=_pairs,
        default=5,
        help="at least this many raw/store pairs (rounds) per batch "
        "size, however short --seconds (default 5: the fewest whose range is a 90%% interval for the "
        "median)",
    )
    p.add_argument("--json", action="store_true")


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    train_teacher(cfg, out_dir=args.out, progress=not args.no_progress)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    loaded, data, cfg = load_model_and_data(args.checkpoint, args.convention, config)
    settings = QualitySettings.of(cfg, n_samples=args.n_samples, feature_extractor=args.feature_extractor)
    table = evaluate_loaded(loaded, data, args.steps, args.solver, settings)
    print(format_table(table))
    default = "eval_student.json" if loaded.kind == "student" else f"eval_{args.solver}.json"
    out = Path(args.out) if args.out else Path(args.checkpoint) / default
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, table)
    print(f"wrote {out}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    path = sample_model(
        args.checkpoint, args.steps, args.solver, args.out, n=args.n, convention=args.convention, config=config
    )
    print(f"wrote {path}")
    return 0


def _cmd_teachers_bench(args: argparse.Namespace) -> int:

    cfg = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with quieted():  # its lines are summed up below
            train_teacher(cfg, out_dir=tmp, progress=not args.json)
        seconds = time.perf_counter() - start
        table = evaluate_teacher(tmp, [1, 32], "rk4", QualitySettings.of(cfg))
    metric = "fid" if "fid" in table["floor"] else "sliced_w2"
    row1, row32 = table["rows"]
    result = {
        "config": args.config,
        "threads": torch.get_num_threads(),
        "train_seconds": round(seconds, 2),
        "budget_seconds": args.budget_s,
        "time_ratio": round(seconds / args.budget_s, 3),
        "metric": metric,
        "teacher_rk4_1": row1[metric],
        "teacher_rk4_32": row32[metric],
        "floor": table["floor"][metric],
        "quality_ratio_32_to_floor": round(row32[metric] / table["floor"][metric], 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"trained {cfg.name} teacher in {seconds:.1f}s on {result['threads']} threads "
            f"(budget {args.budget_s:.0f}s, ratio {result['time_ratio']:.2f})"
        )
        print(
            f"{metric}: rk4 1 step {row1[metric]:.3f}, rk4 32 steps {row32[metric]:.3f}, "
            f"real-vs-real floor {result['floor']:.3f}, "
            f"ratio 32-step/floor {result['quality_ratio_32_to_floor']:.2f}"
        )
    return 0


def _controller(args: argparse.Namespace):

    ray.init(
        address=os.environ.get("RAY_ADDRESS") or "auto",
        namespace=args.namespace,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        return ray.get_actor(controller_name(args.run), namespace=args.namespace)
    except ValueError:
        raise FileNotFoundError(
            f"no running job for run {args.run!r} in namespace {args.namespace!r} (is RAY_ADDRESS the job's cluster?)"
        ) from None


def _print_workers(workers: dict) -> None:
    print(f"{'actor':<28} {'pool':<24} {'state':<10} {'blocks':>7} {'restarts':>8}")
    for name, w in sorted(workers.items()):
        print(f"{name:<28} {w['pool']:<24} {w['state']:<10} {w['blocks']:>7} {w['restarts']:>8}")


def _cmd_teachers_list(args: argparse.Namespace) -> int:
    _print_workers(ray.get(_controller(args).list_teachers.remote()))
    return 0


def _ask_controller(args: argparse.Namespace, method: str, *call_args, refused: str = ""):
    """Call a method of the run's controller; a refusal is printed and returns ``None``."""
    try:
        return ray.get(getattr(_controller(args), method).remote(*call_args))
    except ray.exceptions.RayTaskError as err:
        print(f"error: {refused}{err.cause}", file=sys.stderr)
        return None


def _cmd_teachers_add(args: argparse.Namespace) -> int:
    # the controller runs elsewhere: it gets the path as this shell's directory means it
    overrides = {
        k: v
        for k, v in (("num_cpus", args.num_cpus), ("num_gpus", args.num_gpus), ("resources", args.resources))
        if v is not None
    }
    names = _ask_controller(
        args,
        "add_checkpoint",
        str(resolve_input(args.checkpoint)),
        args.replicas,
        args.role,
        args.name,
        args.pool,
        overrides,
        refused="refused, nothing changed: ",
    )
    if names is None:
        return 2
    print(f"started {', '.join(names)}")
    return 0


def _cmd_teachers_remove(args: argparse.Namespace) -> int:
    if _ask_controller(args, "remove_teacher", args.worker, args.drain) is None:
        return 2
    print(f"removed {args.worker}{' after draining its block' if args.drain else ''}")
    return 0


def _cmd_guides_bench(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if not (cfg.teacher_path / "model.json").is_file():
        with quieted():
            train_teacher(cfg, progress=not args.json)
    with quieted() if args.json else contextlib.nullcontext():
        result = run_production_bench(cfg, str(cfg.teacher_path), args.blocks)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _open_store(args: argparse.Namespace):

    return open_run_store(args.run, Path(args.run_dir) / args.run / "redis", args.url, must_exist=True)


def _cmd_store_export(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        summary = export_store(store, args.to)
    print(f"exported {summary['records']} records in {summary['batches']} batches to {summary['directory']}")
    for item in summary["skipped"]:
        print(f"skipped entry {item['entry']}: {item['reason']}", file=sys.stderr)
    return 0


def _cmd_store_stats(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        print(json.dumps({"run": args.run, **store.stats(), "dead_letters": store.dead_letters(20)}, indent=2))
    return 0


def _cmd_store_bench(args: argparse.Namespace) -> int:
    with quieted() if args.json else contextlib.nullcontext():
        result = run_bench(args.batch_mb, args.seconds, fsync=args.fsync, min_pairs=args.pairs)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"redis {result['redis_version']}, appendfsync {result['fsync']}, ratio = the median over the "
            "raw/store pairs of store / raw bytes per second, [its 90% interval] (target >= 0.8 at 4 MB)"
        )
    return 0


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or size_config(args.size), args.overrides)
    result = run_pipeline_bench(
        cfg, steps=args.steps, workers=args.workers, replicas=args.replicas, pairs=args.pairs, quick=args.quick
    )
    result = {"config": str(args.config or size_config(args.size)), "quick": args.quick, **result}
    print(format_bench_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return run_from_args(args)


def _cmd_doctor(args: argparse.Namespace) -> int:

    checks = environment_checks()
    print(format_checks(checks), flush=True)
    if args.config:
        cfg = load_config(args.config, args.overrides)
        gpus = torch.cuda.device_count()  # this machine's GPUs, or the cluster's when the run would join one
        if os.environ.get("RAY_ADDRESS") and next(c for c in checks if c.name == "ray").ok:
            ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
            gpus = ray.cluster_resources().get("GPU", 0)
        plan = resolve_device(cfg, gpus)
        data_shape = data_shape_of(cfg)
        more = [plan_check(plan), *config_checks(cfg), teachers_check(cfg, data_shape)]
        if ray.is_initialized():  # the cluster in RAY_ADDRESS (a local Ray is started with enough CPUs)
            more.append(cpus_check(cfg, plan, ray.cluster_resources().get("CPU", 0)))
        more.append(student_step_check(cfg, data_shape, plan))
        print(format_checks(more))
        checks += more
    failed = [c for c in checks if c.ok is False]
    print(f"{len(failed)} problem(s) found" if failed else "no problems found")
    return 2 if failed else 0


def _cmd_chaos(args: argparse.Namespace) -> int:
    report = run_chaos(
        load_config(args.config, args.overrides),
        malformed=args.malformed,
        undisturbed=args.undisturbed,
    )
    failed = chaos_failures(report)
    for why in failed:
        print(f"chaos failed: {why}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.run) if Path(args.run).is_dir() else Path(args.run_dir) / args.run
    status, report = read_status(folder), folder / "report.json"
    if status is None and not report.is_file():
        print(
            f"error: no run in {folder} (neither status.json nor report.json): name a run folder, or its name "
            f"with --run-dir",
            file=sys.stderr,
        )
        return 2
    finished = json.loads(report.read_text()) if report.is_file() else None
    state = finished["status"] if finished else status["state"]
    print(f"run {folder.name}: {state}" + (f" ({finished['error']})" if finished and finished.get("error") else ""))
    if status is not None:
        print(student_line(status["student"]))
        for a in status["actors"] if finished is None else []:  # a finished run lists where each ran, below
            print(f"  {a['name']:<40} {a['class']:<16} node {a['node_ip']}")
    placement = ((finished or {}).get("production") or {}).get("placement") or {}
    for name, seen in sorted(placement.items()):
        print(f"  {name:<40} {seen['class']:<16} ran on {', '.join(map(str, seen['nodes']))}")
    if finished and finished.get("ledger"):
        led = finished["ledger"]
        print(
            f"id ledger: {led['planned']} planned, {led['trained']} trained, {led['dead_lettered']} dead-lettered, "
            f"{led['lost']} lost, {led['trained_twice']} trained twice, {led['left_pending']} left pending"
        )
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    run_study(
        args.config,
        quick=args.quick,
        out_dir=args.out,
        show_bar=not args.no_progress,
        report_only=args.report_only,
    )
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "doctor": _cmd_doctor,
    "study": _cmd_study,
    "chaos": _cmd_chaos,
    "status": _cmd_status,
    "train-teacher": _cmd_train_teacher,
    "eval": _cmd_eval,
    "sample": _cmd_sample,
    ("teachers", "bench"): _cmd_teachers_bench,
    ("teachers", "list"): _cmd_teachers_list,
    ("teachers", "add"): _cmd_teachers_add,
    ("teachers", "remove"): _cmd_teachers_remove,
    ("guides", "bench"): _cmd_guides_bench,
    ("store", "export"): _cmd_store_export,
    ("store", "stats"): _cmd_store_stats,
    ("store", "bench"): _cmd_store_bench,
    ("bench", "pipeline"): _cmd_bench_pipeline,
    ("bench", "store"): _cmd_store_bench,
    ("bench", "teachers"): _cmd_teachers_bench,
    ("bench", "guides"): _cmd_guides_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level_of(args.quiet, args.verbose))
    group = {
        "teachers": "teachers_command",
        "store": "store_command",
        "guides": "guides_command",
        "bench": "bench_command",
    }.get(args.command)
    key = (args.command, getattr(args, group)) if group else args.command
    return guarded(_COMMANDS[key], args)


if __name__ == "__main__":
    sys.exit(main())
