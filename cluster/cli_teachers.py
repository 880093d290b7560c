"""``teachers list | add | remove``: a running job's teacher actors, through its controller (their parser:
``cluster.cli``)."""

from __future__ import annotations

import argparse
import sys

import ray

from cluster.controller_actor import controller_name
from cluster.paths import resolve_input

from cluster.ray_start import start_ray

__all__ = ["cmd_teachers_list", "cmd_teachers_add", "cmd_teachers_remove"]


def _controller(args: argparse.Namespace):

    start_ray("cluster", args.namespace)
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


def cmd_teachers_list(args: argparse.Namespace) -> int:
    _print_workers(ray.get(_controller(args).list_teachers.remote()))
    return 0


def _ask_controller(args: argparse.Namespace, method: str, *call_args, refused: str = ""):
    """Call a method of the run's controller; a refusal is printed and returns ``None``."""
    try:
        return ray.get(getattr(_controller(args), method).remote(*call_args))
    except ray.exceptions.RayTaskError as err:
        print(f"error: {refused}{err.cause}", file=sys.stderr)
        return None


def cmd_teachers_add(args: argparse.Namespace) -> int:
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


def cmd_teachers_remove(args: argparse.Namespace) -> int:
    if _ask_controller(args, "remove_teacher", args.worker, args.drain) is None:
        return 2
    print(f"removed {args.worker}{' after draining its block' if args.drain else ''}")
    return 0
