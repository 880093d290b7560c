"""Live progress of a run: the job log's ``student`` line every ``STUDENT_LINE_S`` seconds, ``RUN/status.json``
beside it, and ``bezier-distill status`` reading either back.

The line is one of its own (never inside the guide bar's) and starts with ``student``::

    student 95s: step 1200/5500, 153600 records trained, 14.2 steps/s, loss 0.0412, ETA 303s; guides
    24000/24000, backlog 0 waiting, 1024 held until a checkpoint

While no rank has logged for longer than the line's period (a worker group restarting after a fault, Ray
still finding out that a host is gone), the step figures are the last ones logged and the line says so:
``ETA 303s (nothing logged for 62s: the pool may be restarting)``.

Its figures come from the ranks' own metrics lines (``RUN/metrics.jsonl``, written by rank 0 at each log
interval as the run goes) and the store's counts (waiting: entries no rank was handed; held: delivered, not
acknowledged until a checkpoint holds them). ``status.json`` also lists every live actor and worker of the
run with its node (Ray's state API), and the run report keeps every node each was seen on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from guide_store.atomic import write_json_atomically

__all__ = [
    "STUDENT_LINE_S",
    "last_metrics",
    "student_status",
    "student_line",
    "live_actors",
    "write_status",
    "read_status",
]

STUDENT_LINE_S = 30.0
STATUS_FILE = "status.json"


def last_metrics(run_path: Path) -> dict | None:
    """The newest metrics line with a step (``RUN/metrics.jsonl``), its loss and speed from the newest line
    that has them (the final line has neither), or None before the first one."""
    path = Path(run_path) / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            continue
    rows = [r for r in rows if "step" in r]
    if not rows:
        return None
    logged = [r for r in rows if "loss" in r]
    quiet_s = max(0.0, time.time() - path.stat().st_mtime)
    return {**(logged[-1] if logged else {}), **rows[-1], "quiet_s": round(quiet_s, 1)}


def student_status(elapsed_s: float, total_steps: int, row: dict | None, store: dict, planned: int) -> dict:
    """The figures of one student line."""
    out = {
        "elapsed_s": round(elapsed_s, 1),
        "steps": total_steps,
        "guides_produced": store.get("produced", 0),
        "guides_planned": planned,
        "backlog_waiting": store.get("undelivered", 0),
        "backlog_held": store.get("pending", 0),
        "time": time.time(),
    }
    if row is not None:
        rate = row.get("steps_per_second") or 0.0
        out.update(
            step=row["step"],
            records_trained=row.get("records_consumed"),
            steps_per_second=rate,
            loss=row.get("loss"),
            eta_s=round((total_steps - row["step"]) / rate, 1) if rate and row["step"] < total_steps else 0.0,
        )
        if row.get("quiet_s", 0.0) > STUDENT_LINE_S and row["step"] < total_steps:
            out["quiet_s"] = row["quiet_s"]  # no rank logged for a while: a group restarting, a host being lost
    return out


def student_line(s: dict) -> str:
    head = f"student {s['elapsed_s']:.0f}s: "
    if "step" not in s:
        body = f"starting (no step logged yet of {s['steps']})"
    else:
        loss = f"{s['loss']:.4g}" if isinstance(s.get("loss"), (int, float)) else "-"
        body = (
            f"step {s['step']}/{s['steps']}, {s['records_trained']} records trained, "
            f"{s['steps_per_second']:.1f} steps/s, loss {loss}, ETA {s['eta_s']:.0f}s"
        )
        if "quiet_s" in s:
            body += f" (nothing logged for {s['quiet_s']:.0f}s: the pool may be restarting)"
    return (
        head + body + f"; guides {s['guides_produced']}/{s['guides_planned']}, backlog "
        f"{s['backlog_waiting']} waiting, {s['backlog_held']} held until a checkpoint"
    )


def live_actors(namespace: str, run: str, job_id: str | None = None) -> list[dict]:
    """The run's live teacher actors and student workers (and its controller) with their nodes, from Ray's
    state API (``job_id``: only this job's); empty when it cannot answer (a Ray without its dashboard)."""
    try:
        from ray.util.state import list_actors, list_nodes

        nodes: dict[str | None, str] = {n.node_id: n.node_ip for n in list_nodes(timeout=10)}
        filters: list[tuple[str, str, str | bool | int | float]] = [("state", "=", "ALIVE")]
        if job_id:
            filters.append(("job_id", "=", job_id))
        actors = list_actors(filters=filters, limit=10_000, timeout=10)
    except Exception:  # noqa: BLE001 - the state API is optional here: the line goes on without it
        return []
    out = []
    for a in actors:
        name, cls = a.name or "", a.class_name or ""
        teacher = a.ray_namespace == namespace and name.startswith(f"{run}-")
        if teacher or cls == "RayTrainWorker" or name == f"controller-{run}":
            out.append(
                {
                    "name": name or f"{cls}-{a.actor_id[:8]}",
                    "class": cls,
                    "node_ip": nodes.get(a.node_id),
                    "node_id": a.node_id,
                    "pid": a.pid,
                }
            )
    return sorted(out, key=lambda r: r["name"])


def write_status(run_path: Path, status: dict, actors: list[dict], state: str = "running") -> None:
    write_json_atomically(Path(run_path) / STATUS_FILE, {"state": state, "student": status, "actors": actors})


def read_status(run_path: Path) -> dict | None:
    path = Path(run_path) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
