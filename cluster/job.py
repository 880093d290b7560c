"""The job entrypoint: ``python -m cluster.job CONFIG [--set KEY=VALUE ...]``.

This is what ``ray job submit --working-dir . -- python -m cluster.job configs/digits.yaml``
runs. With ``RAY_ADDRESS`` set (as it is under ``ray job submit``) it joins
that cluster; without, it starts a local Ray, so the same command works on a
laptop. With no ``store.url`` it starts the run's embedded Redis in
``runs/NAME/redis``. It then starts the run's controller and teacher actors,
shows guide production on the console, and writes ``runs/NAME/production.json``.
(The student pool plugs into this entrypoint next.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "resolve_teachers"]


def resolve_teachers(cfg, echo=print):
    """The run's teacher pools with ``self`` resolved to the run's own teacher (``RUN_DIR/NAME/teacher``),
    which is trained first if its checkpoint is missing; with no pools configured, one pool on it."""
    from cluster.config import TeacherPoolConfig
    from teachers.train_teacher import train_teacher

    pools = cfg.teachers or [TeacherPoolConfig(name="teacher", checkpoints=["self"])]
    own = str(cfg.teacher_path)
    pools = [p.model_copy(update={"checkpoints": [own if c == "self" else c for c in p.checkpoints]}) for p in pools]
    if any(own in p.checkpoints for p in pools) and not (cfg.teacher_path / "model.json").is_file():
        echo(f"no teacher checkpoint at {cfg.teacher_path}: training one")
        train_teacher(cfg, echo=echo)
    return cfg.model_copy(update={"teachers": pools})


def _progress(cfg, controller, echo, show_bar: bool) -> dict:
    import ray
    from tqdm.auto import tqdm

    total = cfg.guides.num_samples
    bar = tqdm(total=total, desc=f"{cfg.name}: guides", unit="rec", disable=not show_bar)
    last_check, report = time.monotonic(), {}
    try:
        while True:
            report = ray.get(controller.report.remote())
            bar.n = min(report["store"]["produced"], total)
            bar.set_postfix(teachers=report["live_teachers"], backlog=report["store"]["backlog"])
            bar.refresh()
            if report["finished"]:
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


def run_production(cfg, echo=print, show_bar: bool = True) -> dict:
    """Produce the run's guides with its teacher actors; returns (and writes) the production report."""
    import ray

    from cluster.controller_actor import start_controller
    from guide_store.open_store import run_redis_url

    cfg = resolve_teachers(cfg, echo)
    cfg.run_path.mkdir(parents=True, exist_ok=True)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=os.environ.get("RAY_ADDRESS"), namespace=cfg.namespace, log_to_driver=False)
    start = time.perf_counter()
    try:
        with run_redis_url(cfg.name, cfg.redis_path, cfg.store.url, fsync=cfg.store.fsync) as url:
            controller = start_controller(cfg, url)
            workers = ray.get(controller.start_pools.remote())
            echo(f"run {cfg.name}: {len(workers)} teacher actor(s) {workers}, store {url}")
            report = _progress(cfg, controller, echo, show_bar)
            for name in list(ray.get(controller.list_teachers.remote())):
                if report["workers"][name]["state"] not in ("removed", "dead"):
                    ray.get(controller.remove_teacher.remote(name, True))
            ray.kill(controller)
    finally:
        if started_ray:
            ray.shutdown()
    seconds = time.perf_counter() - start
    store = report["store"]
    out = {"run": cfg.name, "seconds": round(seconds, 2), "records": store["produced"],
           "records_per_second": round(store["produced"] / seconds, 1), "store": store,
           "workers": report["workers"], "guides": cfg.guides.model_dump(mode="json")}
    (cfg.run_path / "production.json").write_text(json.dumps(out, indent=2))
    echo(f"produced {store['produced']} guide records in {seconds:.1f}s; report in {cfg.run_path / 'production.json'}")
    return out


def main(argv: list[str] | None = None) -> int:
    from cluster.config import ConfigError, load_config
    from teachers.checkpoint import CheckpointError

    parser = argparse.ArgumentParser(prog="python -m cluster.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        run_production(cfg, show_bar=not args.no_progress)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
