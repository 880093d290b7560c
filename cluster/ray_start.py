"""Starting or joining Ray from a driver: the one place ``ray.init`` is called. Every driver keeps its
workers' output out of its own (``log_to_driver=False``: the run's log lines are its own)."""

from __future__ import annotations

import os

import ray

__all__ = ["RAY_TARGETS", "start_ray"]

RAY_TARGETS = {
    "cluster": "join a running cluster: RAY_ADDRESS, else the one on this machine (an error when there is none)",
    "configured": "the cluster RAY_ADDRESS names, else a new local Ray of num_cpus CPUs",
    "private": "a new local Ray of num_cpus CPUs of this process's own, whatever RAY_ADDRESS says",
}


def start_ray(target: str, namespace: str | None = None, num_cpus: int | None = None, dashboard: bool = True) -> None:
    """``ray.init`` for ``target`` (see ``RAY_TARGETS``) in ``namespace``. Joining a ``cluster`` only asks
    it something, so Ray's own log lines below ERROR are kept quiet; ``num_cpus`` sizes a Ray started
    here and is not passed to a cluster that is joined; ``dashboard=False`` starts a local Ray without
    its dashboard (a benchmark that needs no state API)."""
    if target not in RAY_TARGETS:
        raise ValueError(f"unknown Ray target {target!r}; known: {sorted(RAY_TARGETS)}")
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"namespace": namespace, "log_to_driver": False}
    if target == "cluster":
        kwargs.update(address=address or "auto", logging_level="ERROR")
    elif target == "configured" and address:
        kwargs.update(address=address)
    else:
        kwargs.update(address=None if target == "configured" else "local", num_cpus=num_cpus)
    if not dashboard:
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
