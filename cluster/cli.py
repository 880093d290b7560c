"""The ``bezier-distill`` command line: the parser and the dispatch to each verb's body (``cluster.cli_run``:
the job's verbs; ``cluster.cli_models``: model folders; ``cluster.cli_teachers``: a running job's teachers;
``cluster.cli_store``: a run's store; ``cluster.cli_bench``: the benchmarks).

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
import json
import sys

from cluster.cli_bench import cmd_bench_pipeline, cmd_guides_bench, cmd_store_bench, cmd_teachers_bench
from cluster.cli_models import cmd_eval, cmd_sample, cmd_train_teacher
from cluster.cli_run import cmd_chaos, cmd_doctor, cmd_run, cmd_status, cmd_study
from cluster.cli_store import cmd_store_export, cmd_store_stats
from cluster.cli_teachers import cmd_teachers_add, cmd_teachers_list, cmd_teachers_remove
from cluster.exit_codes import guarded
from cluster.job import add_run_arguments
from cluster.logs import add_log_arguments, configure_logging, level_of
from cluster.pipeline_bench import BENCH_SIZES
from guide_store.embedded import FSYNC_POLICIES
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION
from teachers.digits_features import FEATURE_EXTRACTORS
from teachers.solvers import SOLVERS

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


_COMMANDS = {
    "run": cmd_run,
    "doctor": cmd_doctor,
    "study": cmd_study,
    "chaos": cmd_chaos,
    "status": cmd_status,
    "train-teacher": cmd_train_teacher,
    "eval": cmd_eval,
    "sample": cmd_sample,
    ("teachers", "bench"): cmd_teachers_bench,
    ("teachers", "list"): cmd_teachers_list,
    ("teachers", "add"): cmd_teachers_add,
    ("teachers", "remove"): cmd_teachers_remove,
    ("guides", "bench"): cmd_guides_bench,
    ("store", "export"): cmd_store_export,
    ("store", "stats"): cmd_store_stats,
    ("store", "bench"): cmd_store_bench,
    ("bench", "pipeline"): cmd_bench_pipeline,
    ("bench", "store"): cmd_store_bench,
    ("bench", "teachers"): cmd_teachers_bench,
    ("bench", "guides"): cmd_guides_bench,
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
