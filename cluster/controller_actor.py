"""The controller: a named Ray actor that owns a run's teacher pool and the assignment of blocks.

Blocks of sample ids are handed out one at a time; a block held by an actor
that died (and was restarted by Ray, or is gone) is handed out again. The
store's per-block put guard makes a re-produced block land once. Every change
to the pool is appended to ``RUN/events.jsonl``. The class is plain; it is
made remote (threaded: workers call it while it waits on others) in
``start_controller``. State is guarded by one lock that is never held across
a remote call.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from pathlib import Path

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import RunConfig, TeacherPoolSettings
from cluster.metrics import RunGauges
from guide_store.open_store import open_store
from teachers.models import check_model, model_data_shape
from teachers.teacher_actor import TeacherWorker, block_ids
from teachers.train_teacher import load_run_data

__all__ = ["Controller", "controller_name", "start_controller"]


def controller_name(run: str) -> str:
    return f"controller-{run}"


class Controller:
    def __init__(self, cfg: RunConfig, store_url: str):
        self.cfg = cfg
        self.store_url = store_url
        g = self.cfg.guides
        self.num_blocks = math.ceil(g.num_samples / g.block_size)
        self.queue: deque[int] = deque(range(self.num_blocks))
        self.assigned: dict[int, str] = {}
        self.done: dict[int, str] = {}
        # the run's id ledger (``cluster.ledger``): each block's ids as planned, and each block an actor reported
        # written with its records and entry (the store's counters are not asked)
        self.plan = {b: [int(ids[0]), len(ids)] for b in range(self.num_blocks) for ids in [block_ids(cfg.guides, b)]}
        self.written: dict[int, dict] = {}
        self.workers: dict[str, dict] = {}  # name -> {"pool", "state", "restarts", "blocks"}
        self.handles: dict[str, ActorHandle] = {}
        self.pools: dict[str, TeacherPoolSettings] = {p.name: p for p in self.cfg.teacher_pool}
        self.lock = threading.Lock()
        self.done_times: list[float] = []  # when each block finished: steady-state rates for benchmarks
        self.events = self.cfg.run_path / "events.jsonl"
        self.events.parent.mkdir(parents=True, exist_ok=True)
        self.events.write_text("")  # this attempt's events only (the run report counts its faults from them)
        self._serial = 0

    # -- pool ----------------------------------------------------------------------------
    def _record(self, kind: str, **fields) -> None:
        with self.events.open("a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, **fields}) + "\n")

    def start_pools(self) -> list[str]:
        """Start every configured pool's replicas (does not wait for them)."""
        started = []
        for pool in list(self.pools.values()):
            started += self.add_teacher(pool, pool.replicas)
        return started

    def add_teacher(self, spec: TeacherPoolSettings, replicas: int = 1) -> list[str]:
        """Start ``replicas`` actors of the pool ``spec``; refused with a clear error (nothing started) when
        its checkpoints are missing or do not fit the data."""
        for path in spec.checkpoints:
            shape = model_data_shape(path)  # any model folder; raises CheckpointError naming the file
            data_shape = self._data_shape()
            if shape != data_shape:
                raise ValueError(
                    f"teacher {path}: data_shape {list(shape)} does not match the run's data "
                    f"{list(data_shape)}; nothing was started"
                )
            check_model(path, data_shape, spec.convention)  # a diffusers model must fit its convention too
        names = []
        for _ in range(replicas):
            with self.lock:
                self._serial += 1
                name = f"{spec.name}-{self._serial}"
                self.pools[spec.name] = spec
                self.workers[name] = {"pool": spec.name, "state": "starting", "restarts": 0, "blocks": 0}
            actor = (
                ray.remote(TeacherWorker)
                .options(
                    name=f"{self.cfg.name}-{name}",
                    namespace=self.cfg.namespace,
                    max_restarts=self.cfg.max_restarts,
                    max_task_retries=0,
                    num_cpus=spec.num_cpus,
                    num_gpus=spec.num_gpus,
                    max_concurrency=2,
                    resources=dict(spec.resources) or None,
                )
                .remote(name, self.cfg, spec, self.store_url, ray.get_runtime_context().current_actor)
            )
            with self.lock:
                self.handles[name] = actor  # type: ignore[assignment]  # ray types .options().remote() loosely
            self._record("teacher_added", worker=name, pool=spec.name, checkpoints=spec.checkpoints)
            names.append(name)
        return names

    def add_checkpoint(
        self,
        checkpoint: str,
        replicas: int = 1,
        role: str | None = None,
        name: str | None = None,
        pool: str | None = None,
        overrides: dict | None = None,
    ) -> list[str]:
        """``teachers add``: actors whose guides come from ``checkpoint``; with ``role`` (``g1``/``g2``) only
        that guide does, the others keep the pool's teachers. The actors copy the settings of the pool they
        join (``pool``, default the run's first: CPUs, GPUs, custom resources, threads, convention), with
        ``overrides`` (``num_cpus``, ``num_gpus``, ``resources``) on top."""
        if pool is not None and pool not in self.pools:
            raise ValueError(f"no teacher pool {pool!r}; the run's pools: {sorted(self.pools)}")
        joined = self.pools[pool] if pool is not None else next(iter(self.pools.values()), None)
        k = self.cfg.guides.n_guides
        if role is None:
            checkpoints = [checkpoint]
        else:
            index = {"g1": 0, "g2": 1}.get(role)
            if index is None or index >= max(k, 1):
                raise ValueError(
                    f"role {role!r} is not a guide of a {self.cfg.guides.path} path; "
                    f"allowed: {['g1', 'g2'][: max(k, 1)]}"
                )
            base = joined.checkpoints if joined is not None else [checkpoint]
            checkpoints = (base * max(k, 1))[: max(k, 1)] if len(base) == 1 else list(base)
            checkpoints[index] = checkpoint
        default = re.sub(r"[^A-Za-z0-9_.-]", "_", f"added-{Path(checkpoint).parent.name}-{role or 'all'}")
        settings = (
            joined.model_dump(include={"num_cpus", "num_gpus", "resources", "threads", "convention"})
            if joined is not None
            else {}
        )
        spec = TeacherPoolSettings(
            **{**settings, **(overrides or {}), "name": name or default, "checkpoints": checkpoints}
        )
        return self.add_teacher(spec, replicas)

    def _data_shape(self) -> tuple[int, ...]:
        if not hasattr(self, "_shape"):
            self._shape = load_run_data(self.cfg.data, self.cfg.seed).data_shape
        return self._shape

    def remove_teacher(self, name: str, drain: bool = True, drain_timeout_s: float = 600.0) -> dict:
        """Stop a worker, whatever its state: with ``drain`` it finishes its current block first (no partial
        batch is ever put: a batch is one atomic put); without, or when it cannot drain (restarting, gone),
        it is killed and its block is handed out again. An actor already removed or dead is left as it is."""
        with self.lock:
            if name not in self.workers:
                known = ", ".join(f"{n} ({w['state']})" for n, w in sorted(self.workers.items())) or "none"
                raise ValueError(f"no teacher actor {name!r}; the run's teacher actors: {known}")
            if name not in self.handles:
                return dict(self.workers[name])
            handle = self.handles[name]
            self.workers[name]["state"] = "draining" if drain else "removing"
        if drain:
            try:
                ray.get(handle.drain.remote(), timeout=drain_timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                drain = False  # it could not finish its block: the block is handed out again below
        ray.kill(handle, no_restart=True)
        with self.lock:
            self.handles.pop(name)
            self.workers[name]["state"] = "removed"
            self._requeue(name)
        self._record("teacher_removed", worker=name, drain=drain)
        return dict(self.workers[name])

    # -- blocks ----------------------------------------------------------------------------
    def register(self, name: str, node: str) -> None:
        """Called by a worker's constructor, with its node's address (kept in the worker's ``nodes``, every
        node it ran on, however briefly): a worker that registered before (it has nodes) was restarted by Ray
        after a crash. A worker being removed stays so (its first registration may come after
        ``remove_teacher``: it was still loading)."""
        with self.lock:
            w = self.workers.setdefault(name, {"pool": "?", "state": "starting", "restarts": 0, "blocks": 0})
            nodes = w.setdefault("nodes", [])
            restarted = bool(nodes)
            if node not in nodes:
                nodes.append(node)
            if restarted:
                w["restarts"] += 1
                self._requeue(name)
            if w["state"] not in ("draining", "removing"):
                w["state"] = "running"
        if restarted:
            self._record("teacher_restarted", worker=name)

    def _requeue(self, name: str) -> None:
        for block in [b for b, w in self.assigned.items() if w == name]:
            del self.assigned[block]
            self.queue.appendleft(block)

    def next_block(self, name: str) -> int | None:
        with self.lock:
            if self.workers.get(name, {}).get("state") != "running" or not self.queue:
                return None
            block = self.queue.popleft()
            self.assigned[block] = name
            return block

    def block_done(self, name: str, info: dict) -> None:
        with self.lock:
            block = info["block"]
            if self.assigned.get(block) == name:
                del self.assigned[block]
            self.done.setdefault(block, name)
            self.written.setdefault(block, {"records": info["records"], "entry": info.get("entry"), "worker": name})
            self.workers[name]["blocks"] += 1
            # what the actor computed with, for the run report
            self.workers[name].update({k: info[k] for k in ("device", "precision") if k in info})
            self.done_times.append(time.time())

    def worker_failed(self, name: str, error: str) -> None:
        """A worker's production loop raised: its block is handed out again and the actor is stopped (a
        restart would fail the same way); the job sees ``failed`` and the error in the report."""
        with self.lock:
            worker = self.workers.get(name)
            if worker is None or worker["state"] in ("removed", "dead", "failed"):
                return
            worker.update(state="failed", error=error)
            handle = self.handles.pop(name, None)
            self._requeue(name)
        self._record("teacher_failed", worker=name, error=error)
        if handle is not None:
            ray.kill(handle, no_restart=True)

    def worker_idle(self, name: str) -> None:
        with self.lock:
            if self.workers.get(name, {}).get("state") == "running":
                self.workers[name]["state"] = "idle"

    def check_workers(self) -> list[str]:
        """Find workers that are gone for good (Ray gave up restarting them) and hand their blocks out again.
        One that Ray is restarting (or that does not answer yet) is ``restarting``: its blocks are handed out
        again now, and it takes part again once its new incarnation registers."""
        with self.lock:
            live = {
                n: h
                for n, h in self.handles.items()
                if self.workers[n]["state"] in ("running", "starting", "restarting")
            }
            # a ping that fails because the actor was restarting says nothing once its new incarnation has
            # registered meanwhile (restarts went up): that one is running and must not be marked restarting
            incarnation = {n: self.workers[n]["restarts"] for n in live}
        dead, restarting = [], []
        for name, handle in live.items():
            try:
                ray.get(handle.ping.remote(), timeout=30)
            except ray.exceptions.ActorDiedError:
                dead.append(name)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                restarting.append(name)  # ActorUnavailableError: Ray is bringing it back
        with self.lock:
            for name in dead:
                self.workers[name]["state"] = "dead"
                self.handles.pop(name, None)
                self._requeue(name)
            for name in restarting:
                if self.workers[name]["restarts"] != incarnation[name]:
                    continue
                if self.workers[name]["state"] != "restarting":
                    self.workers[name]["state"] = "restarting"
                    self._requeue(name)
        for name in dead:
            self._record("teacher_dead", worker=name)
        return dead

    # -- inspection ------------------------------------------------------------------------
    def state(self) -> dict:
        with self.lock:
            return {
                "run": self.cfg.name,
                "blocks": self.num_blocks,
                "done": len(self.done),
                "done_times": list(self.done_times),
                "plan": dict(self.plan),
                "written": dict(self.written),
                "assigned": dict(self.assigned),
                "queued": len(self.queue),
                "workers": {n: dict(w) for n, w in self.workers.items()},
                "finished": len(self.done) == self.num_blocks,
            }

    def report(self) -> dict:
        """State plus the store's counts; also refreshes the run's dashboard gauges."""
        if not hasattr(self, "_store"):
            self._store = open_store(self.store_url, self.cfg.name)
            self._gauges = RunGauges(self.cfg.name)
        state = self.state()
        stats = self._store.stats()
        live = sum(w["state"] == "running" for w in state["workers"].values())
        self._gauges.update(stats, live)
        return {**state, "store": stats, "live_teachers": live}

    def list_teachers(self) -> dict:
        with self.lock:
            return {n: dict(w) for n, w in self.workers.items()}


def start_controller(cfg: RunConfig, store_url: str):
    """Start (or find) the run's named controller actor in the run's namespace, on the driver's own node: it
    holds the plan and the ledger's written blocks, so it must not share the fate of a worker node (a job
    whose driver's node is lost is lost anyway)."""
    return (
        ray.remote(Controller)
        .options(
            name=controller_name(cfg.name),
            namespace=cfg.namespace,
            get_if_exists=True,
            max_concurrency=16,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
        )
        .remote(cfg, store_url)
    )
