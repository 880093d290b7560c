"""What the run asks of the Ray cluster's nodes: CPUs for a local Ray, and a run directory every node sees."""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import RunConfig

__all__ = ["local_cpus", "cpu_shortage", "check_shared_run_dir"]


def _teacher_cpus(cfg: RunConfig) -> float:
    return sum(p.replicas * p.num_cpus for p in cfg.teachers) if cfg.teachers else 1


def local_cpus(cfg: RunConfig) -> int:
    """Logical CPUs for a local Ray: at least what the teacher actors and student workers ask for together,
    since both run at once (each with its own few threads, so a small machine is shared, not deadlocked)."""
    return max(os.cpu_count() or 1, int(_teacher_cpus(cfg) + cfg.student.workers * cfg.student.cpus_per_worker
                                        + 0.999))


def cpu_shortage(cfg: RunConfig, cluster_cpus: float, student_workers: int) -> tuple[str, str] | None:
    """``(what, fix)`` when a Ray cluster of ``cluster_cpus`` logical CPUs cannot hold the run's teacher actors
    and its ``student_workers`` student workers at once (they run together, so Ray would keep the student pool
    waiting for ever); ``None`` when it can. Ray Train's controller asks for no CPU."""
    teachers = _teacher_cpus(cfg)
    need = teachers + student_workers * cfg.student.cpus_per_worker
    if cluster_cpus + 1e-9 >= need:
        return None
    what = (f"the Ray cluster has {cluster_cpus:g} CPUs, and the run holds {need:g} at once: {teachers:g} for the "
            f"teacher actors (teachers[].replicas x teachers[].num_cpus) and {student_workers} student worker(s) x "
            f"student.cpus_per_worker {cfg.student.cpus_per_worker:g}; Ray would keep the student pool waiting "
            "for ever")
    fix = (f"start the head with `ray start --head --num-cpus={math.ceil(need)}` (logical CPUs are scheduling "
           "slots: the actors and workers run one torch thread each and share a small machine's cores), add "
           "nodes, or lower teachers[].replicas, student.workers or student.cpus_per_worker")
    return what, fix


def check_shared_run_dir(run_path: Path, echo=print, timeout_s: float = 60.0) -> list[str]:
    """On a cluster of several nodes, warn for each node that cannot see the run directory (it must be
    shared storage: student workers and teacher actors there read checkpoints from it). Returns the IPs of
    the nodes that cannot; an empty list on one node."""
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
