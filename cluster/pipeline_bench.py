"""``bezier-distill bench pipeline``: the distributed pipeline against what one process does on the same
hardware, measured in one run on whatever device is present (issue 16). Every figure is records per second.

Student (records trained on per second = steps/s x global batch, global batch = workers x ``batch_size``):

- plain: ``student.plain_loop``, one process with no DeepSpeed, Ray or store: the same network, objective,
  optimizer, schedule, clipping, EMA and precision, ``workers x student.threads`` torch threads (or the same
  GPU), the records already on the device;
- pipeline: the student pool (``cluster.student_pool``: Ray Train + DeepSpeed, ``workers`` ranks) reading a
  Redis store filled beforehand with the same records, no teacher running. Its speed comes from its own
  ``RUN/metrics.jsonl``: the median of its log intervals' steps/s, the first interval left out (the
  warm-up: start-up and the fresh deliveries, one block a step while the store has any). The store holds
  enough records (``student.max_reuse`` uses each) that a rank never waits for guides, so the measured
  steps draw from the replay pool, as nearly every step of a real run does.

The plain loop is timed in intervals of ``student.log_every`` steps too, after a few warm-up steps, and
its median taken: other work on a shared machine hits single intervals (a two-thread loop worst). It runs
twice, before Ray starts and after Ray has stopped, and its figure is the mean of the two (both are in the
JSON rows): a shared machine's speed drifts over the minutes between them, and a baseline taken on one
side of the pool only moved the ratio by up to 30%. The means over the whole timed span are in the JSON
rows as well.

Production (guide records per second, ``cluster.production_bench``):

- plain: ``build_block`` in this process, no actors, no store, with what the actors get between them: on
  the CPU ``replicas x threads`` torch threads (each actor has ``threads``), on a GPU the same device;
- pipeline: ``replicas`` teacher actors producing into the store (steady rate, start-up left out).

``ratio`` = pipeline / plain. The headline is the config's ``student.workers`` and its first teacher pool's
``replicas``; ``scale`` holds every ``--workers`` and ``--replicas`` count. GPU busy fractions come from
``nvidia-smi`` (``cluster.gpu_busy``), ``None`` on the CPU. The teacher is an untrained one of the config's
network (speed does not depend on training), saved in a temporary directory: no run is needed first.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cluster.config import RunConfig
from cluster.gpu_busy import GpuBusySampler
from cluster.production_bench import actor_rate, bench_pool_config, local_ray, timed_blocks
from cluster.student_pool import run_student_pool
from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore
from guide_store.schema import GuideBatch
from student.plain_loop import plain_student_rate
from student.settings import StudentJob
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from teachers.device_plan import resolve_device
from teachers.nets import build_network
from teachers.registry import Registry
from teachers.train_teacher import load_run_data

__all__ = ["BENCH_SIZES", "BenchError", "size_config", "BenchSteps", "steady_steps_per_second",
           "run_pipeline_bench", "format_bench_table"]

RAW_BLOCKS = 5  # blocks the raw baseline builds per actor count: one warm-up, four timed

# ``--size``: the shipped config each preset runs
BENCH_SIZES: Registry[str] = Registry("bench size", {"digits": "digits.yaml", "32": "bench32.yaml"})
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class BenchError(ValueError):
    """The bench cannot measure what was asked (too few steps for a steady rate); the message says why."""


def size_config(size: str) -> Path:
    return CONFIG_DIR / BENCH_SIZES[size]


@dataclass(frozen=True)
class BenchSteps:
    """How much each measurement runs: the pool ``steps`` student steps, of which it times those after its
    first log interval (``log_every``); the plain loop as many after ``warmup_steps``; ``blocks_per_actor``
    blocks per teacher actor."""

    steps: int
    log_every: int
    warmup_steps: int
    blocks_per_actor: int

    @classmethod
    def of(cls, cfg: RunConfig, steps: int | None, quick: bool) -> "BenchSteps":
        """``--quick``: two log intervals of the pool (one timed), two blocks per actor; else eight and six."""
        log_every = cfg.student.log_every
        steps = steps or (2 if quick else 8) * log_every
        if steps < 2 * log_every:
            raise BenchError(f"--steps {steps}: the pool's rate needs at least two log intervals of "
                             f"student.log_every={log_every} steps (the first is its warm-up)")
        return cls(steps, log_every, 5 if quick else 20, 2 if quick else 6)

    @property
    def timed_steps(self) -> int:
        return self.steps - self.log_every


def steady_steps_per_second(history: list[dict]) -> tuple[float, float]:
    """A pool's steady speed from its ``metrics.jsonl``, the first log interval left out: the median of
    the intervals' ``steps_per_second`` (what the bench reports: other work on a shared machine hits single
    intervals) and the mean over their whole span."""
    logged = [r for r in history if "steps_per_second" in r]
    if len(logged) < 2:
        raise ValueError(f"the pool logged {len(logged)} interval(s); the steady rate needs two")
    first, last = logged[0], logged[-1]
    mean = (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
    return statistics.median(r["steps_per_second"] for r in logged[1:]), mean


def _untrained_teacher(cfg: RunConfig, data_shape: tuple[int, ...], out_dir: Path) -> str:
    net = cfg.teacher.network
    torch.manual_seed(cfg.seed)
    model = build_network(net.arch, data_shape, **net.kwargs())
    meta = CheckpointMeta(arch=net.arch, arch_kwargs=net.kwargs(), data_shape=list(data_shape), role="teacher",
                          data_name=cfg.data.name, training=cfg.model_dump(mode="json"), extra={"untrained": True})
    return str(save_checkpoint(out_dir / "teacher", model, meta))


def _student_run(cfg: RunConfig, workers: int, steps: int, blocks: int) -> RunConfig:
    """The pool's run: ``workers`` ranks, ``steps`` steps, ``blocks`` blocks in the store (all of the run). The
    distribution-matching phase is off: the plain loop has none, and the bench times plain steps on the guides."""
    finetune = cfg.student.finetune.model_copy(update={"steps": 0})
    student = cfg.student.model_copy(update={"workers": workers, "steps": steps, "finetune": finetune})
    guides = cfg.guides.model_copy(update={"num_samples": blocks * cfg.guides.block_size})
    return cfg.model_copy(update={"name": f"{cfg.name}-bench-student", "student": student, "guides": guides})


def _blocks_needed(cfg: RunConfig, workers: int, steps: int) -> int:
    """Blocks enough for ``steps`` steps of ``workers`` ranks within ``max_reuse`` uses a record (and a
    quarter more), at least two a rank and four in all (a warm-up block and three timed ones)."""
    uses = steps * workers * cfg.student.batch_size / cfg.student.max_reuse
    return max(4, 2 * workers, math.ceil(1.25 * uses / cfg.guides.block_size))


def _fill_store(cfg: RunConfig, url: str, blocks: list[GuideBatch]) -> None:
    """The run's stream emptied, then every block put as a producer puts it."""
    store = RedisGuideStore(url, cfg.name)
    store.delete_run()
    store.close()
    store = RedisGuideStore(url, cfg.name, dtype=cfg.store.dtype)
    try:
        for b, batch in enumerate(blocks):
            store.put(batch, key=f"block-{b}")
    finally:
        store.close()


def _plain(cfg: RunConfig, workers: int, blocks: list[GuideBatch], data_shape, init, sizing: BenchSteps) -> dict:
    """The plain loop on the pool's device and precision, ``workers x student.threads`` threads."""
    run = _student_run(cfg, workers, sizing.steps, len(blocks))
    device, precision = resolve_device(run, torch.cuda.device_count()).student.place()
    points = [torch.cat(ps) for ps in zip(*(b.control_points for b in blocks))]
    threads = torch.get_num_threads()
    torch.set_num_threads(workers * run.student.threads)
    try:
        with GpuBusySampler(workers) as busy:
            got = plain_student_rate(StudentJob.of(run, None, data_shape, init), points,
                                     workers * run.student.batch_size, sizing.timed_steps, sizing.warmup_steps,
                                     device, precision)
    finally:
        torch.set_num_threads(threads)
    sps = statistics.median(got["interval_steps_per_second"])
    return {"records_per_second": sps * workers * run.student.batch_size, "mean_records_per_second":
            got["records_per_second"], "busy_fraction": busy.busy_fraction(), "precision": precision,
            "parameters": got["parameters"]}


def _pipeline(cfg: RunConfig, workers: int, url: str, blocks: list[GuideBatch], data_shape, init,
              sizing: BenchSteps) -> dict:
    """The student pool on a store holding ``blocks``; its steady rate from its metrics history."""
    run = _student_run(cfg, workers, sizing.steps, len(blocks))
    _fill_store(run, url, blocks)
    with GpuBusySampler(workers) as busy:
        summary = run_student_pool(run, url, data_shape, init, echo=lambda s: None,
                                   plan=resolve_device(run, torch.cuda.device_count()))
    history = [json.loads(line) for line in (run.run_path / "metrics.jsonl").read_text().splitlines()]
    sps, mean = steady_steps_per_second(history)
    records = workers * run.student.batch_size
    return {"records_per_second": sps * records, "mean_records_per_second": mean * records,
            "busy_fraction": busy.busy_fraction(), "precision": summary["precision"], "device": summary["device"],
            "guide_wait_s_rank0": summary["guide_wait_s_rank0"], "wall_s": summary["seconds"]}


def _bracket(before: dict, after: dict) -> dict:
    """The plain loop's figures as the mean of its runs before and after the pool, each kept."""
    mean = {k: (before[k] + after[k]) / 2 for k in ("records_per_second", "mean_records_per_second")}
    return {**before, **mean, "before": before["records_per_second"], "after": after["records_per_second"]}


def _student_row(workers: int, batch_size: int, plain: dict, pipe: dict, records: int) -> dict:
    return {"what": "student", "workers": workers, "global_batch": workers * batch_size,
            "plain_records_per_s": round(plain["records_per_second"], 1),
            "plain_before_records_per_s": round(plain["before"], 1),
            "plain_after_records_per_s": round(plain["after"], 1),
            "pipeline_records_per_s": round(pipe["records_per_second"], 1),
            "ratio": round(pipe["records_per_second"] / plain["records_per_second"], 3),
            "plain_mean_records_per_s": round(plain["mean_records_per_second"], 1),
            "pipeline_mean_records_per_s": round(pipe["mean_records_per_second"], 1),
            "plain_busy_fraction": plain["busy_fraction"], "device_busy_fraction": pipe["busy_fraction"],
            "precision": pipe["precision"], "plain_precision": plain["precision"], "device": pipe["device"],
            "guide_wait_s_rank0": pipe["guide_wait_s_rank0"], "pool_wall_s": pipe["wall_s"],
            "parameters": plain["parameters"], "records_filled": records}


def _raw_rate(cfg: RunConfig, replicas: int, on_gpu: bool) -> float:
    """The raw baseline for ``replicas`` actors: blocks built in this process, no actors, no store, with the
    threads the actors have between them (``replicas x threads``) on the CPU; on a GPU, which the actors
    share, the process's own thread count."""
    threads = torch.get_num_threads() if on_gpu else replicas * cfg.teachers[0].threads
    return timed_blocks(cfg.model_copy(update={"guides": cfg.guides.model_copy(
        update={"num_samples": RAW_BLOCKS * cfg.guides.block_size})}), RAW_BLOCKS, threads)[1]


def _production_row(cfg: RunConfig, replicas: int, url: str, checkpoint: str, raw: float, on_gpu: bool,
                    sizing: BenchSteps, echo) -> dict:
    share = math.floor(10_000 / replicas) / 10_000 if on_gpu else 0.0  # the actors share the GPU
    got = actor_rate(bench_pool_config(cfg, checkpoint, sizing.blocks_per_actor * replicas, share), replicas, url)
    echo(f"production, {replicas} actor(s): {got['records_per_s']:.1f} records/s")
    return {"what": "production", "replicas": replicas, "plain_records_per_s": round(raw, 1),
            "plain_threads": None if on_gpu else replicas * cfg.teachers[0].threads,
            "pipeline_records_per_s": got["records_per_s"], "ratio": round(got["records_per_s"] / raw, 3),
            "startup_s": got["startup_s"]}


def _counts(own: int, asked: list[int] | None, default: list[int]) -> list[int]:
    return sorted({own, *(asked or default)})


def run_pipeline_bench(cfg: RunConfig, *, steps: int | None = None, workers: list[int] | None = None,
                       replicas: list[int] | None = None, quick: bool = False, echo=print) -> dict:
    """Measure the student and production rows (see the module docstring); returns the result JSON."""
    sizing = BenchSteps.of(cfg, steps, quick)
    gpus = torch.cuda.device_count()
    own_workers = resolve_device(cfg, gpus).student_workers  # on GPUs: at most one rank per GPU
    own_replicas = cfg.teachers[0].replicas if cfg.teachers else 1
    asked = _counts(own_workers, workers, [own_workers] if quick else [1, 2])
    workers = sorted({resolve_device(_student_run(cfg, w, sizing.steps, 1), gpus).student_workers for w in asked})
    replicas = _counts(own_replicas, replicas, [own_replicas] if quick else [1, 2, 4])
    data_shape = load_run_data(cfg).data_shape
    on_gpu = resolve_device(cfg, gpus).guides.device == "cuda"
    cpus = max(os.cpu_count() or 1, max(replicas), math.ceil(max(workers) * cfg.student.cpus_per_worker))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        cfg = cfg.model_copy(update={"run_dir": tmp})
        checkpoint = _untrained_teacher(cfg, data_shape, Path(tmp))
        # one pool on the untrained teacher; the records the student reads are built in this process
        cfg = cfg.model_copy(update={"teachers": bench_pool_config(cfg, checkpoint, 1, float(on_gpu)).teachers})
        n_blocks = _blocks_needed(cfg, max(workers), sizing.steps)
        blocks, raw = timed_blocks(_student_run(cfg, max(workers), sizing.steps, n_blocks), n_blocks)
        echo(f"built {n_blocks} guide blocks in-process for the store ({raw:.1f} records/s, one thread)")
        init = checkpoint if cfg.student.init == "teacher" else None
        plain, raws = {}, {}
        for w in workers:  # before Ray starts, so its daemons' start-up does not slow the plain loop
            plain[w] = _plain(cfg, w, blocks, data_shape, init, sizing)
            echo(f"student, {w} worker(s): plain loop {plain[w]['records_per_second']:.1f} records/s")
        for r in replicas:
            raws[r] = _raw_rate(cfg, r, on_gpu)
            echo(f"production, {r} actor(s): raw in-process {raws[r]:.1f} records/s"
                 + ("" if on_gpu else f" ({r * cfg.teachers[0].threads} thread(s))"))
        pipes, production = {}, []
        with local_ray(cfg.namespace, cpus), EmbeddedRedis(Path(tmp) / "redis", fsync=cfg.store.fsync) as server:
            for w in workers:
                pipes[w] = _pipeline(cfg, w, server.url, blocks, data_shape, init, sizing)
                echo(f"student, {w} worker(s): pool {pipes[w]['records_per_second']:.1f} records/s")
            for r in replicas:
                production.append(_production_row(cfg, r, server.url, checkpoint, raws[r], on_gpu, sizing, echo))
        student = []
        for w in workers:  # the plain loop again once Ray is gone: the two bracket the pool on a drifting machine
            after = _plain(cfg, w, blocks, data_shape, init, sizing)
            echo(f"student, {w} worker(s): plain loop again {after['records_per_second']:.1f} records/s")
            student.append(_student_row(w, cfg.student.batch_size, _bracket(plain[w], after), pipes[w],
                                        n_blocks * cfg.guides.block_size))
    return _result(cfg, _headline(student, "workers", own_workers), _headline(production, "replicas", own_replicas),
                   student + production, sizing, data_shape, time.perf_counter() - start)


def _headline(rows: list[dict], key: str, own: int) -> dict:
    """The row of the config's own count (a GPU run may have capped it: then the largest measured)."""
    return next((r for r in rows if r[key] == own), max(rows, key=lambda r: r[key]))


def _result(cfg: RunConfig, s: dict, p: dict, scale: list[dict], sizing: BenchSteps, data_shape,
            seconds: float) -> dict:
    """The result JSON from the headline student row ``s``, production row ``p`` and every row."""
    device = s["device"] if s["device"] == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})"
    g = cfg.guides
    return {
        "device": device, "precision": s["precision"], "date": time.strftime("%Y-%m-%d"),
        "student_plain_records_per_s": s["plain_records_per_s"],
        "student_pipeline_records_per_s": s["pipeline_records_per_s"], "student_ratio": s["ratio"],
        "production_raw_records_per_s": p["plain_records_per_s"],
        "production_pipeline_records_per_s": p["pipeline_records_per_s"], "production_ratio": p["ratio"],
        "device_busy_fraction": s["device_busy_fraction"], "plain_busy_fraction": s["plain_busy_fraction"],
        "sizes": {"parameters": s["parameters"], "data_shape": list(data_shape), "batch_size": cfg.student.batch_size,
                  "workers": s["workers"], "global_batch": s["global_batch"], "threads_per_worker": cfg.student.threads,
                  "replicas": p["replicas"], "block_size": g.block_size, "records_filled": s["records_filled"],
                  "objective": cfg.student.objective,
                  "guides": f"{g.path}/{g.coupling}, {g.coupling_solver} x {g.coupling_steps}"},
        "steps": sizing.steps, "timed_steps": sizing.timed_steps, "seconds": round(seconds, 1),
        "definitions": {"student": "records/s = steps/s x workers x batch_size; plain: one process, "
                                   "workers x threads torch threads, records in memory",
                        "production": "plain: the same blocks built in one process, no actors, no store, with "
                                      "replicas x threads torch threads on the CPU, on the same GPU otherwise"},
        "scale": scale,
    }


def format_bench_table(result: dict) -> str:
    """The result as a Markdown table: what | plain | pipeline | ratio, a row per measured count (``*``: the
    headline, the config's own), then the GPU busy fractions and what "plain" means for production."""
    sizes = result["sizes"]
    rows = [("what", "plain", "pipeline", "ratio"), ("---",) * 4]
    for r in result["scale"]:
        if r["what"] == "student":
            mark = "*" if r["workers"] == sizes["workers"] else ""
            what = (f"student records/s, {r['workers']} worker(s) x {sizes['batch_size']}{mark} ({r['precision']}; "
                    f"plain: 1 process, {r['workers'] * sizes['threads_per_worker']} thread(s))")
        else:
            mark = "*" if r["replicas"] == sizes["replicas"] else ""
            threads = "the GPU" if r["plain_threads"] is None else f"{r['plain_threads']} thread(s)"
            what = f"guide records/s, {r['replicas']} actor(s){mark} (plain: 1 process, {threads})"
        rows.append((what, f"{r['plain_records_per_s']:.1f}", f"{r['pipeline_records_per_s']:.1f}",
                     f"{r['ratio']:.2f}"))
    busy = (lambda v: "n/a" if v is None else f"{v:.2f}")
    rows.append(("GPU busy fraction while the student trains", busy(result["plain_busy_fraction"]),
                 busy(result["device_busy_fraction"]), ""))
    head = (f"{result['device']}, {result['precision']}; {sizes['parameters']} parameters, data "
            f"{'x'.join(map(str, sizes['data_shape']))}; {result['steps']} student steps "
            f"({result['timed_steps']} timed); {result['date']}")
    notes = ("* the headline (the config's own counts). ratio = pipeline / plain. Student records: plain is the "
             "mean of the plain loop before Ray starts and after it stops (both in the JSON). Guide records: plain "
             "builds the same blocks in one process, no actors and no store, with the threads the actors have between "
             "them on the CPU (replicas x teacher threads), on the same GPU otherwise.")
    return "\n".join([head, *("| " + " | ".join(r) + " |" for r in rows), notes])
