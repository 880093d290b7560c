"""``bezier-distill bench pipeline``: the distributed pipeline against what one process does on the same
hardware, measured in one run on whatever device is present (issues 16 and 30). Every figure is records per
second.

Pairs. The bench runs ``--pairs`` (5; ``--quick`` 1) interleaved plain/pipeline pairs: the plain side of every
count with Ray down, then the pipeline side of every count on a fresh local Ray and Redis, then Ray stopped,
and again. Each pair gives each ratio once; a headline ratio is the median of its pairs' ratios, and its
``_interval`` a 90% interval for that median, distribution-free: order statistics of the pair ratios
(``guide_store.bench.median_interval``: with 5 pairs their whole range, coverage 1 - 2/32 = 0.94). On a
shared machine the speed drifts over minutes (the plain loop moved by up to 30% between runs, one ratio
0.91 and 0.77 thirteen minutes apart): interleaving spreads the drift over both sides, the median and its
interval show how far it moves a ratio. Each rate in the JSON beside a ratio is the median of that rate over
the pairs (so pipeline / plain of the medians need not be the median ratio); every pair is in the rows.

Student (records trained on per second = steps/s x global batch, global batch = workers x ``batch_size``):

- plain: ``student.plain_loop``, one process with no DeepSpeed, Ray or store: the same network, objective,
  optimizer, schedule, clipping, EMA and precision, the records already on the device, timed in intervals of
  ``student.log_every`` steps after a few warm-up steps and the median interval taken; with ``workers x
  student.threads`` torch threads (or the same GPU), and with one worker (``student.threads`` threads, one
  rank's batch) for perfect scaling;
- pipeline: the student pool (``cluster.student_pool``: Ray Train + DeepSpeed, ``workers`` ranks) reading a
  Redis store filled beforehand with the same records, no teacher running. Its speed comes from its own
  ``RUN/metrics.jsonl``: the median of its log intervals' steps/s, the first interval left out (the
  warm-up: start-up and the fresh deliveries, one block a step while the store has any). The store holds
  enough records (``student.max_reuse`` uses each) that a rank never waits for guides, so the measured
  steps draw from the replay pool, as nearly every step of a real run does.
- ``student_ratio`` = pipeline / the plain loop with the same threads (one process, ``workers x threads``);
  ``student_ratio_perfect_scaling`` = pipeline / (``workers`` x the one-worker plain loop): the pool
  against the one-worker loop scaled perfectly, what ``workers`` separate processes could at best do.

Production (guide records per second, ``cluster.production_bench``):

- plain: ``build_block`` in this process, no actors, no store: (a) with what the actors get between them,
  ``replicas x threads`` torch threads (each actor has ``threads``), on a GPU the same device; (b) with one
  actor's threads at each block size of ``production_block_sizes_tried`` (the config's block size x 1/2, 1,
  2, 4), the best of them in each pair (``best_block_size``; larger blocks build faster in one thread);
- pipeline: ``replicas`` teacher actors producing into the store (steady rate, start-up left out).
- ``production_ratio`` = pipeline / (a), one process with the actors' threads between them (bf16 teacher
  inference scales badly over threads in one process, which flatters the actors);
  ``production_ratio_perfect_scaling`` = pipeline / (``replicas`` x the best one-thread rate (b)): one
  process's best scaled perfectly. On a GPU the actors share the device: that baseline is one copy of (b)
  (``production_perfect_scaling_copies`` = 1).

The headline is the config's ``student.workers`` and its first teacher pool's ``replicas``; ``scale`` holds
every ``--workers`` and ``--replicas`` count, each with its pairs. GPU busy fractions come from ``nvidia-smi``
(``cluster.gpu_busy``), ``None`` on the CPU. The teacher is an untrained one of the config's network (speed
does not depend on training), saved in a temporary directory: no run is needed first.

Sizing (``BenchSteps``): ``--size digits`` on 2 idle cores, estimated from ``--quick`` timings (a pool's
start-up about 22 s, Ray's about 5 s) and the earlier full runs' rates: a pair takes about 2.6 minutes (two
pools of 300 steps, 250 timed, about 80 s; the plain loops at 1 and 2 workers, 270 steps each, about 30 s;
three actor counts at 5 blocks each about 20 s; the in-process blocks about 17 s; Ray about 10 s), the 5
pairs about 13-14 minutes, within 20 with a third to spare for a shared machine.
"""

from __future__ import annotations

import logging
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from guide_store.errors import ClusterError
from cluster.logs import quieted
from cluster.config import RunConfig
from cluster.gpu_busy import GpuBusySampler
from cluster.production_bench import actor_rate, bench_pool_config, local_ray, timed_blocks
from cluster.student_pool import run_student_pool
from guide_store.bench import INTERVAL_LEVEL, median_interval
from guide_store.embedded import EmbeddedRedis
from guide_store.open_store import open_store
from guide_store.schema import GuideBatch
from student.plain_loop import plain_student_rate
from student.settings import StudentJob
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from teachers.device_plan import resolve_device
from teachers.ensemble import TeacherSpec
from teachers.nets import build_network
from teachers.registry import Registry
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = [
    "BENCH_SIZES",
    "BenchError",
    "size_config",
    "BenchSteps",
    "steady_steps_per_second",
    "block_sizes_tried",
    "run_pipeline_bench",
    "format_bench_table",
]

RAW_BLOCKS = 5  # blocks the replicas x threads baseline builds per actor count: one warm-up, four timed
BLOCK_SIZE_FACTORS = (0.5, 1, 2, 4)  # the one-thread baseline tries the config's block size times these

# ``--size``: the shipped config each preset runs
BENCH_SIZES: Registry[str] = Registry("bench size", {"digits": "digits.yaml", "32": "bench32.yaml"})
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class BenchError(ClusterError, ValueError):
    """The bench cannot measure what was asked (too few steps for a steady rate); the message says why."""


def size_config(size: str) -> Path:
    return CONFIG_DIR / BENCH_SIZES[size]


@dataclass(frozen=True)
class BenchSteps:
    """How much each measurement runs, in each of ``pairs`` pairs: the pool ``steps`` student steps, of which
    it times those after its first log interval (``log_every``); the plain loop as many after
    ``warmup_steps``; ``blocks_per_actor`` blocks per teacher actor; the one-thread baseline about
    ``sweep_records`` timed records at each block size (after a warm-up block)."""

    steps: int
    log_every: int
    warmup_steps: int
    blocks_per_actor: int
    pairs: int
    sweep_records: int

    @classmethod
    def of(cls, cfg: RunConfig, steps: int | None, quick: bool, pairs: int | None = None) -> "BenchSteps":
        """``--quick``: one pair, two log intervals of the pool (one timed), two blocks per actor, 256 records
        a block size; else five pairs of six intervals (five timed), five blocks per actor and 512 records:
        five pairs of the full digits bench fit in 20 minutes on 2 cores (the module docstring's sizing)."""
        log_every = cfg.student.log_every
        steps = steps or (2 if quick else 6) * log_every
        if steps < 2 * log_every:
            raise BenchError(
                f"--steps {steps}: the pool's rate needs at least two log intervals of "
                f"student.log_every={log_every} steps (the first is its warm-up)"
            )
        if pairs is not None and pairs < 1:
            raise BenchError(f"--pairs {pairs}: the bench needs at least one plain/pipeline pair")
        return cls(
            steps, log_every, 5 if quick else 20, 2 if quick else 5, pairs or (1 if quick else 5), 256 if quick else 512
        )

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
    net = cfg.teacher_training.network
    torch.manual_seed(cfg.seed)
    model = build_network(net.arch, data_shape, **net.kwargs())
    meta = CheckpointMeta(
        arch=net.arch,
        arch_kwargs=net.kwargs(),
        data_shape=list(data_shape),
        role="teacher",
        data_name=cfg.data.name,
        training=cfg.model_dump(mode="json"),
        extra={"untrained": True},
    )
    return str(save_checkpoint(out_dir / "teacher", model, meta))


def _student_run(cfg: RunConfig, workers: int, steps: int, blocks: int) -> RunConfig:
    """The pool's run: ``workers`` ranks, ``steps`` steps, ``blocks`` blocks in the store (all of the run). The
    distribution-matching phase is off: the plain loop has none, and the bench times plain steps on the guides."""
    dm_phase = cfg.student.dm_phase.model_copy(update={"steps": 0})
    student = cfg.student.model_copy(update={"workers": workers, "steps": steps, "dm_phase": dm_phase})
    guides = cfg.guides.model_copy(update={"num_samples": blocks * cfg.guides.block_size})
    return cfg.model_copy(update={"name": f"{cfg.name}-bench-student", "student": student, "guides": guides})


def _blocks_needed(cfg: RunConfig, workers: int, steps: int) -> int:
    """Blocks enough for ``steps`` steps of ``workers`` ranks within ``max_reuse`` uses a record (and a
    quarter more), at least two a rank and four in all (a warm-up block and three timed ones)."""
    uses = steps * workers * cfg.student.batch_size / cfg.student.max_reuse
    return max(4, 2 * workers, math.ceil(1.25 * uses / cfg.guides.block_size))


def _fill_store(cfg: RunConfig, url: str, blocks: list[GuideBatch]) -> None:
    """The run's stream emptied, then every block put as a producer puts it."""
    store = open_store(url, cfg.name)
    store.delete_run()
    store.close()
    store = open_store(url, cfg.name, dtype=cfg.store.dtype)
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
            got = plain_student_rate(
                StudentJob.of(run, None, data_shape, init),
                points,
                workers * run.student.batch_size,
                sizing.timed_steps,
                sizing.warmup_steps,
                device,
                precision,
            )
    finally:
        torch.set_num_threads(threads)
    sps = statistics.median(got["interval_steps_per_second"])
    return {
        "records_per_second": sps * workers * run.student.batch_size,
        "mean_records_per_second": got["records_per_second"],
        "busy_fraction": busy.busy_fraction(),
        "precision": precision,
        "parameters": got["parameters"],
    }


def _pipeline(
    cfg: RunConfig, workers: int, url: str, blocks: list[GuideBatch], data_shape, init, sizing: BenchSteps
) -> dict:
    """The student pool on a store holding ``blocks``; its steady rate from its metrics history."""
    run = _student_run(cfg, workers, sizing.steps, len(blocks))
    _fill_store(run, url, blocks)
    with GpuBusySampler(workers) as busy, quieted():
        summary = run_student_pool(run, url, data_shape, init, plan=resolve_device(run, torch.cuda.device_count()))
    history = [json.loads(line) for line in (run.run_path / "metrics.jsonl").read_text().splitlines()]
    sps, mean = steady_steps_per_second(history)
    records = workers * run.student.batch_size
    return {
        "records_per_second": sps * records,
        "mean_records_per_second": mean * records,
        "busy_fraction": busy.busy_fraction(),
        "precision": summary["precision"],
        "device": summary["device"],
        "guide_wait_s_rank0": summary["guide_wait_s_rank0"],
        "wall_s": summary["seconds"],
    }


def _raw_rate(cfg: RunConfig, replicas: int, on_gpu: bool) -> float:
    """Baseline (a) for ``replicas`` actors: blocks built in this process, no actors, no store, with the
    threads the actors have between them (``replicas x threads``) on the CPU; on a GPU, which the actors
    share, the process's own thread count."""
    threads = torch.get_num_threads() if on_gpu else replicas * cfg.teacher_pool[0].threads
    return timed_blocks(
        cfg.model_copy(
            update={"guides": cfg.guides.model_copy(update={"num_samples": RAW_BLOCKS * cfg.guides.block_size})}
        ),
        RAW_BLOCKS,
        threads,
    )[1]


def block_sizes_tried(cfg: RunConfig) -> list[int]:
    """The block sizes of the one-thread baseline: the config's times ``BLOCK_SIZE_FACTORS``."""
    return sorted({max(1, round(cfg.guides.block_size * f)) for f in BLOCK_SIZE_FACTORS})


def _one_thread_rates(cfg: RunConfig, sizes: list[int], records: int, on_gpu: bool) -> list[list]:
    """Baseline (b): ``[block_size, records/s]`` built in this process with one actor's threads (on a GPU the
    process's own, on the device), a warm-up block and about ``records`` timed records at each size."""
    threads = torch.get_num_threads() if on_gpu else cfg.teacher_pool[0].threads
    rates = []
    for size in sizes:
        n = 1 + math.ceil(records / size)
        guides = cfg.guides.model_copy(update={"block_size": size, "num_samples": n * size})
        rates.append([size, round(timed_blocks(cfg.model_copy(update={"guides": guides}), n, threads)[1], 1)])
    return rates


def _pair_config(cfg: RunConfig, pair: int) -> RunConfig:
    """Pair ``pair``'s runs in a directory of their own (and each pair has its own Redis): no pool or
    controller finds an earlier pair's checkpoints or state. The names stay: the store's records carry them."""
    return cfg.model_copy(update={"run_dir": str(Path(cfg.run_dir) / f"pair-{pair}")})


def _student_pair(workers: int, plain: dict, one: dict, pipe: dict) -> dict:
    """One pair's student figures: ``plain`` the loop with the pool's threads, ``one`` with one worker's."""
    plain_rate, one_rate = round(plain["records_per_second"], 1), round(one["records_per_second"], 1)
    pipe_rate, perfect = round(pipe["records_per_second"], 1), round(workers * one_rate, 1)
    return {
        "plain_records_per_s": plain_rate,
        "pipeline_records_per_s": pipe_rate,
        "ratio": round(pipe_rate / plain_rate, 3),
        "one_worker_records_per_s": one_rate,
        "perfect_scaling_records_per_s": perfect,
        "ratio_perfect_scaling": round(pipe_rate / perfect, 3),
        "plain_mean_records_per_s": round(plain["mean_records_per_second"], 1),
        "pipeline_mean_records_per_s": round(pipe["mean_records_per_second"], 1),
        "plain_busy_fraction": plain["busy_fraction"],
        "device_busy_fraction": pipe["busy_fraction"],
        "guide_wait_s_rank0": pipe["guide_wait_s_rank0"],
        "pool_wall_s": pipe["wall_s"],
    }


def _production_pair(copies: int, raw: float, one_thread: list[list], got: dict) -> dict:
    """One pair's production figures: ``raw`` baseline (a), ``one_thread`` baseline (b) at each block size,
    ``got`` the actors' rate; the perfect-scaling baseline is ``copies`` x the best of (b)."""
    best_size, best = max(one_thread, key=lambda sr: sr[1])
    raw, pipe, perfect = round(raw, 1), got["records_per_s"], round(copies * best, 1)
    return {
        "plain_records_per_s": raw,
        "pipeline_records_per_s": pipe,
        "ratio": round(pipe / raw, 3),
        "one_thread_by_block_size": one_thread,
        "best_block_size": best_size,
        "one_thread_records_per_s": best,
        "perfect_scaling_records_per_s": perfect,
        "ratio_perfect_scaling": round(pipe / perfect, 3),
        "startup_s": got["startup_s"],
    }


def _median(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else round(statistics.median(values), 3)


def _summary(pairs: list[dict], rates: tuple[str, ...]) -> dict:
    """A row's figures over its pairs: each of ``rates`` the median of the pairs' (``None`` if one is
    ``None``), each ratio the median of the pairs' ratios with its 90% interval."""
    out = {k: _median(p[k] for p in pairs) for k in rates}
    for k in ("ratio", "ratio_perfect_scaling"):
        got = median_interval([p[k] for p in pairs])
        out[k], out[f"{k}_interval"] = round(got["median"], 3), got["interval"]
    return out


def _student_row(workers: int, batch_size: int, pairs: list[dict], plain: dict, pipe: dict, records: int) -> dict:
    rates = (
        "plain_records_per_s",
        "pipeline_records_per_s",
        "one_worker_records_per_s",
        "perfect_scaling_records_per_s",
        "plain_mean_records_per_s",
        "pipeline_mean_records_per_s",
        "plain_busy_fraction",
        "device_busy_fraction",
        "guide_wait_s_rank0",
        "pool_wall_s",
    )
    return {
        "what": "student",
        "workers": workers,
        "global_batch": workers * batch_size,
        **_summary(pairs, rates),
        "precision": pipe["precision"],
        "plain_precision": plain["precision"],
        "device": pipe["device"],
        "parameters": plain["parameters"],
        "records_filled": records,
        "pairs": pairs,
    }


def _production_row(replicas: int, threads: int | None, copies: int, pairs: list[dict]) -> dict:
    rates = (
        "plain_records_per_s",
        "pipeline_records_per_s",
        "one_thread_records_per_s",
        "perfect_scaling_records_per_s",
        "startup_s",
    )
    best = Counter(p["best_block_size"] for p in pairs).most_common(1)[0][0]
    return {
        "what": "production",
        "replicas": replicas,
        "plain_threads": threads,
        **_summary(pairs, rates),
        "perfect_scaling_copies": copies,
        "best_block_size": best,
        "pairs": pairs,
    }


def _counts(own: int, asked: list[int] | None, default: list[int]) -> list[int]:
    return sorted({own, *(asked or default)})


def run_pipeline_bench(
    cfg: RunConfig,
    *,
    steps: int | None = None,
    workers: list[int] | None = None,
    replicas: list[int] | None = None,
    pairs: int | None = None,
    quick: bool = False,
) -> dict:
    """Measure the student and production rows in interleaved pairs (see the module docstring); returns the
    result JSON."""
    sizing = BenchSteps.of(cfg, steps, quick, pairs)
    gpus = torch.cuda.device_count()
    own_workers = resolve_device(cfg, gpus).student_workers  # on GPUs: at most one rank per GPU
    own_replicas = cfg.teacher_pool[0].replicas
    asked = _counts(own_workers, workers, [own_workers] if quick else [1, 2])
    workers = sorted({resolve_device(_student_run(cfg, w, sizing.steps, 1), gpus).student_workers for w in asked})
    replicas = _counts(own_replicas, replicas, [own_replicas] if quick else [1, 2, 4])
    data_shape = load_run_data(cfg.data, cfg.seed).data_shape
    on_gpu = resolve_device(cfg, gpus).guides.device == "cuda"
    cpus = max(os.cpu_count() or 1, max(replicas), math.ceil(max(workers) * cfg.student.cpus_per_worker))
    copies = {r: 1 if on_gpu else r for r in replicas}  # the actors share a GPU: one copy of its best
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        cfg = cfg.model_copy(update={"run_dir": tmp})
        checkpoint = _untrained_teacher(cfg, data_shape, Path(tmp))
        # one pool on the untrained teacher; the records the student reads are built in this process
        cfg = cfg.model_copy(update={"teacher_pool": bench_pool_config(cfg, checkpoint, 1, float(on_gpu)).teacher_pool})
        n_blocks = _blocks_needed(cfg, max(workers), sizing.steps)
        blocks, raw = timed_blocks(_student_run(cfg, max(workers), sizing.steps, n_blocks), n_blocks)
        log.info(f"built {n_blocks} guide blocks in-process for the store ({raw:.1f} records/s, one thread)")
        init = TeacherSpec((checkpoint,)) if cfg.student.init == "teacher" else None
        sizes = block_sizes_tried(cfg)
        student_pairs: dict[int, list[dict]] = {w: [] for w in workers}
        production_pairs: dict[int, list[dict]] = {r: [] for r in replicas}
        pair_seconds: list[float] = []
        for pair in range(1, sizing.pairs + 1):
            began, pcfg, tag = time.perf_counter(), _pair_config(cfg, pair), f"pair {pair}/{sizing.pairs}"
            # the plain side with Ray down, so neither its daemons nor their start-up slow it
            plain = {w: _plain(pcfg, w, blocks, data_shape, init, sizing) for w in sorted({1, *workers})}
            log.info(
                f"{tag}: plain loop "
                + ", ".join(f"{w} worker(s) {p['records_per_second']:.1f}" for w, p in plain.items())
                + " records/s"
            )
            raws = {r: _raw_rate(pcfg, r, on_gpu) for r in replicas}
            one_thread = _one_thread_rates(pcfg, sizes, sizing.sweep_records, on_gpu)
            log.info(
                f"{tag}: in-process blocks "
                + ", ".join(f"{r} actor(s)' threads {v:.1f}" for r, v in raws.items())
                + "; one actor's threads by block size "
                + ", ".join(f"{s} {v:.1f}" for s, v in one_thread)
                + " records/s"
            )
            pipes, actors = {}, {}
            with (
                local_ray(pcfg.namespace, cpus),
                EmbeddedRedis(Path(tmp) / f"redis-{pair}", fsync=cfg.store.fsync) as server,
            ):
                for w in workers:
                    pipes[w] = _pipeline(pcfg, w, server.url, blocks, data_shape, init, sizing)
                    log.info(f"{tag}: student, {w} worker(s): pool {pipes[w]['records_per_second']:.1f} records/s")
                for r in replicas:
                    share = math.floor(10_000 / r) / 10_000 if on_gpu else 0.0  # the actors share the GPU
                    actors[r] = actor_rate(
                        bench_pool_config(pcfg, checkpoint, sizing.blocks_per_actor * r, share), r, server.url
                    )
                    log.info(f"{tag}: production, {r} actor(s): {actors[r]['records_per_s']:.1f} records/s")
            for w in workers:
                student_pairs[w].append(_student_pair(w, plain[w], plain[1], pipes[w]))
            for r in replicas:
                production_pairs[r].append(_production_pair(copies[r], raws[r], one_thread, actors[r]))
            pair_seconds.append(round(time.perf_counter() - began, 1))
            log.info(f"{tag}: {pair_seconds[-1]:.0f} s")
        student = [
            _student_row(
                w, cfg.student.batch_size, student_pairs[w], plain[w], pipes[w], n_blocks * cfg.guides.block_size
            )
            for w in workers
        ]
        production = [
            _production_row(r, None if on_gpu else r * cfg.teacher_pool[0].threads, copies[r], production_pairs[r])
            for r in replicas
        ]
    return _result(
        cfg,
        _headline(student, "workers", own_workers),
        _headline(production, "replicas", own_replicas),
        student + production,
        sizing,
        sizes,
        pair_seconds,
        data_shape,
        time.perf_counter() - start,
    )


def _headline(rows: list[dict], key: str, own: int) -> dict:
    """The row of the config's own count (a GPU run may have capped it: then the largest measured)."""
    return next((r for r in rows if r[key] == own), max(rows, key=lambda r: r[key]))


def _result(
    cfg: RunConfig,
    s: dict,
    p: dict,
    scale: list[dict],
    sizing: BenchSteps,
    sizes: list[int],
    pair_seconds: list[float],
    data_shape,
    seconds: float,
) -> dict:
    """The result JSON from the headline student row ``s``, production row ``p`` and every row."""
    device = s["device"] if s["device"] == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})"
    g = cfg.guides
    headline = lambda what, row, keys: {f"{what}_{k}": row[k] for k in keys}
    return {
        "device": device,
        "precision": s["precision"],
        "date": time.strftime("%Y-%m-%d"),
        "student_plain_records_per_s": s["plain_records_per_s"],
        "student_pipeline_records_per_s": s["pipeline_records_per_s"],
        "student_ratio": s["ratio"],
        **headline(
            "student",
            s,
            (
                "ratio_interval",
                "one_worker_records_per_s",
                "perfect_scaling_records_per_s",
                "ratio_perfect_scaling",
                "ratio_perfect_scaling_interval",
            ),
        ),
        "production_raw_records_per_s": p["plain_records_per_s"],
        "production_pipeline_records_per_s": p["pipeline_records_per_s"],
        "production_ratio": p["ratio"],
        **headline(
            "production",
            p,
            (
                "ratio_interval",
                "one_thread_records_per_s",
                "best_block_size",
                "perfect_scaling_copies",
                "perfect_scaling_records_per_s",
                "ratio_perfect_scaling",
                "ratio_perfect_scaling_interval",
            ),
        ),
        "production_block_sizes_tried": sizes,
        "device_busy_fraction": s["device_busy_fraction"],
        "plain_busy_fraction": s["plain_busy_fraction"],
        "pairs": sizing.pairs,
        "interval_level": INTERVAL_LEVEL,
        "interval_coverage": median_interval([q["ratio"] for q in s["pairs"]])["coverage"],  # n's alone
        "interval_method": "order statistics of the per-pair ratios: [x_(j), x_(n+1-j)] with the largest j whose "
        "binomial coverage P(j <= B <= n-j), B ~ Bin(n, 1/2), is at least interval_level "
        "(the whole range when none is; its coverage in interval_coverage)",
        "sizes": {
            "parameters": s["parameters"],
            "data_shape": list(data_shape),
            "batch_size": cfg.student.batch_size,
            "workers": s["workers"],
            "global_batch": s["global_batch"],
            "threads_per_worker": cfg.student.threads,
            "replicas": p["replicas"],
            "block_size": g.block_size,
            "records_filled": s["records_filled"],
            "objective": cfg.student.objective,
            "guides": f"{g.path}/{g.coupling}, {g.coupling_solver} x {g.coupling_steps}",
        },
        "steps": sizing.steps,
        "timed_steps": sizing.timed_steps,
        "seconds": round(seconds, 1),
        "pair_seconds": pair_seconds,
        "definitions": {
            "student": "records/s = steps/s x workers x batch_size; plain: one process, records in memory",
            "student_ratio": "pipeline / the plain loop with workers x threads torch threads (same GPU on a GPU)",
            "student_ratio_perfect_scaling": "pipeline / (workers x the plain loop with one worker's threads and "
            "batch: student_perfect_scaling_records_per_s)",
            "production": "plain: the same blocks built in one process, no actors, no store",
            "production_ratio": "pipeline / blocks built with replicas x threads torch threads in one process "
            "(production_raw_records_per_s; the same GPU otherwise)",
            "production_ratio_perfect_scaling": "pipeline / (production_perfect_scaling_copies (replicas; 1 on a "
            "GPU, which the actors share) x the best one-thread in-process rate "
            "over production_block_sizes_tried)",
            "medians": "each ratio is the median of its pairs' ratios, each rate the median of its pairs' rates; "
            "every pair is in scale[].pairs",
        },
        "scale": scale,
    }


def format_bench_table(result: dict) -> str:
    """The result as a Markdown table: what | plain | pipeline | ratio | its interval, two rows per measured
    count (``*``: the headline, the config's own): against the same-threads process and against perfect
    scaling; then the GPU busy fractions and what each baseline is."""
    sizes = result["sizes"]
    rows = [("what", "plain", "pipeline", "ratio", f"{result['interval_level']:.0%} interval"), ("---",) * 5]
    span = lambda r, k: "[{:.2f}, {:.2f}]".format(*r[f"{k}_interval"])
    for r in result["scale"]:
        if r["what"] == "student":
            mark = "*" if r["workers"] == sizes["workers"] else ""
            what = (
                f"student records/s, {r['workers']} worker(s) x {sizes['batch_size']}{mark} ({r['precision']}; "
                f"plain: 1 process, {r['workers'] * sizes['threads_per_worker']} thread(s))"
            )
            perfect = f"the same against {r['workers']} x the 1-worker plain loop (perfect scaling)"
        else:
            mark = "*" if r["replicas"] == sizes["replicas"] else ""
            threads = "the GPU" if r["plain_threads"] is None else f"{r['plain_threads']} thread(s)"
            what = f"guide records/s, {r['replicas']} actor(s){mark} (plain: 1 process, {threads})"
            perfect = (
                f"the same against {r['perfect_scaling_copies']} x the best 1-thread in-process rate (block "
                f"{r['best_block_size']} of {', '.join(map(str, result['production_block_sizes_tried']))})"
            )
        rows.append(
            (
                what,
                f"{r['plain_records_per_s']:.1f}",
                f"{r['pipeline_records_per_s']:.1f}",
                f"{r['ratio']:.2f}",
                span(r, "ratio"),
            )
        )
        rows.append(
            (
                perfect,
                f"{r['perfect_scaling_records_per_s']:.1f}",
                f"{r['pipeline_records_per_s']:.1f}",
                f"{r['ratio_perfect_scaling']:.2f}",
                span(r, "ratio_perfect_scaling"),
            )
        )
    busy = lambda v: "n/a" if v is None else f"{v:.2f}"
    rows.append(
        (
            "GPU busy fraction while the student trains",
            busy(result["plain_busy_fraction"]),
            busy(result["device_busy_fraction"]),
            "",
            "",
        )
    )
    head = (
        f"{result['device']}, {result['precision']}; {sizes['parameters']} parameters, data "
        f"{'x'.join(map(str, sizes['data_shape']))}; {result['steps']} student steps "
        f"({result['timed_steps']} timed); {result['pairs']} interleaved plain/pipeline pair(s), the interval "
        f"covering the median with probability {result['interval_coverage']:.2f}; {result['date']}"
    )
    notes = (
        "* the headline (the config's own counts). ratio = the median over the pairs of pipeline / plain "
        "(the rates are each the median of the pairs' rates). Student records: plain is one process with the "
        "pool's threads, or one worker's loop times the workers. Guide records: plain builds the same blocks "
        "in one process, no actors and no store, with the threads the actors have between them on the CPU "
        "(replicas x teacher threads), on the same GPU otherwise; or one actor's threads at its best block "
        "size times the actors (one copy on a GPU, which they share)."
    )
    return "\n".join([head, *("| " + " | ".join(r) + " |" for r in rows), notes])
