"""What the run asks of the Ray cluster's nodes: CPUs for a local Ray, and a run directory every node sees."""

from __future__ import annotations

import logging
import math
import os
import secrets
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import RunConfig
from guide_store.atomic import write_text_atomically

log = logging.getLogger(__name__)

__all__ = ["local_cpus", "cpu_shortage", "resource_shortage", "check_shared_run_dir", "store_host", "store_unreachable"]


def _teacher_cpus(cfg: RunConfig) -> float:
    return sum(p.replicas * p.num_cpus for p in cfg.teacher_pool)


def local_cpus(cfg: RunConfig) -> int:
    """Logical CPUs for a local Ray: at least what the teacher actors and student workers ask for together,
    since both run at once (each with its own few threads, so a small machine is shared, not deadlocked)."""
    return max(
        os.cpu_count() or 1, int(_teacher_cpus(cfg) + cfg.student.max_workers * cfg.student.cpus_per_worker + 0.999)
    )


def cpu_shortage(cfg: RunConfig, cluster_cpus: float, student_workers: int) -> tuple[str, str] | None:
    """``(what, fix)`` when a Ray cluster of ``cluster_cpus`` logical CPUs cannot hold the run's teacher actors
    and its ``student_workers`` student workers at once (they run together, so Ray would keep the student pool
    waiting for ever); ``None`` when it can. Ray Train's controller asks for no CPU."""
    teachers = _teacher_cpus(cfg)
    need = teachers + student_workers * cfg.student.cpus_per_worker
    if cluster_cpus + 1e-9 >= need:
        return None
    what = (
        f"the Ray cluster has {cluster_cpus:g} CPUs, and the run holds {need:g} at once: {teachers:g} for the "
        f"teacher actors (teachers[].replicas x teachers[].num_cpus) and {student_workers} student worker(s) x "
        f"student.cpus_per_worker {cfg.student.cpus_per_worker:g}; Ray would keep the student pool waiting "
        "for ever"
    )
    fix = (
        f"start the head with `ray start --head --num-cpus={math.ceil(need)}` (logical CPUs are scheduling "
        "slots: the actors and workers run one torch thread each and share a small machine's cores), add "
        "nodes, or lower teachers[].replicas, student.workers or student.cpus_per_worker"
    )
    return what, fix


def resource_shortage(cfg: RunConfig, cluster: dict[str, float], student_workers: int) -> tuple[str, str] | None:
    """``(what, fix)`` when the custom resources the run's placement asks for (``teachers[].resources`` per
    actor, ``student.resources_per_worker`` per worker) are not offered by the cluster's nodes in all: Ray would
    keep those actors or workers waiting for ever. ``None`` when they are (per-node fit is Ray's to decide)."""
    need: dict[str, float] = {}
    asks: dict[str, list[str]] = {}
    for p in cfg.teacher_pool:
        for name, amount in p.resources.items():
            need[name] = need.get(name, 0.0) + p.replicas * amount
            asks.setdefault(name, []).append(f"teachers[{p.name}].resources ({p.replicas} x {amount:g})")
    for name, amount in cfg.student.resources_per_worker.items():
        need[name] = need.get(name, 0.0) + student_workers * amount
        asks.setdefault(name, []).append(f"student.resources_per_worker ({student_workers} x {amount:g})")
    short = {n: v for n, v in need.items() if cluster.get(n, 0.0) + 1e-9 < v}
    if not short:
        return None
    what = "; ".join(
        f"{' + '.join(asks[n])} ask for {v:g} of resource {n!r}, the cluster's nodes offer {cluster.get(n, 0.0):g}"
        for n, v in short.items()
    )
    fix = (
        "start the nodes that should hold them with the resource, e.g. `ray start --address=HEAD:PORT "
        f"--resources='{{\"{next(iter(short))}\": {math.ceil(max(short.values()))}}}'`, "
        "or change the placement keys"
    )
    return what, fix


def check_shared_run_dir(run_path: Path, timeout_s: float = 60.0) -> list[str]:
    """On a cluster of several nodes, warn for each node that cannot see the run directory (it must be
    shared storage: student workers and teacher actors there read checkpoints from it). Returns the IPs of
    the nodes that cannot; an empty list on one node."""
    others = _other_nodes()
    if not others:
        return []
    token = secrets.token_hex(8)
    marker = run_path / ".shared-check"
    write_text_atomically(marker, token)  # another node never reads half a token
    try:
        blind = _nodes_failing(others, _sees_marker, (str(marker), token), timeout_s)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        log.warning(
            f"warning: the run directory {run_path} is not visible from node(s) {', '.join(blind)}; on several "
            "nodes run_dir must be shared storage (NFS, a mounted bucket), or workers there will not find the "
            "teachers and checkpoints"
        )
    return blind


def _other_nodes() -> list[dict]:
    here = ray.get_runtime_context().get_node_id()
    return [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here and n.get("Resources", {}).get("CPU")]


def store_host() -> str:
    """Where the run's embedded Redis listens for its clients: loopback on one node; on several, this node's
    address (the other nodes' actors and workers must reach it)."""
    return ray.util.get_node_ip_address() if _other_nodes() else "127.0.0.1"


def store_unreachable(url: str, timeout_s: float = 60.0) -> list[str]:
    """The nodes (IPs) from which a small task cannot reach the store at ``url`` (every alive node with CPUs,
    this one included): their actors and workers could not read or write guides."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n.get("Resources", {}).get("CPU")]
    return _nodes_failing(nodes, _reaches, (url,), timeout_s)


def _nodes_failing(nodes: list[dict], check, args: tuple, timeout_s: float) -> list[str]:
    """The addresses of ``nodes`` where a task running ``check(*args)`` did not answer True in time."""
    probe = ray.remote(num_cpus=0, max_retries=0)(check)
    refs = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(*args): n[
            "NodeManagerAddress"
        ]
        for n in nodes
    }
    done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in pending:
        ray.cancel(ref, force=True)
    passed = set()
    for ref in done:
        try:
            if ray.get(ref):
                passed.add(refs[ref])
        except ray.exceptions.RayError:
            pass
    return sorted(set(refs.values()) - passed)


def _reaches(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        ok = bool(client.ping())
        client.close()
        return ok
    except (redis.RedisError, OSError):
        return False


def _sees_marker(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
