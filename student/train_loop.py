"""The student training loop that runs in each Ray Train worker (DeepSpeed data parallel).

Each rank is one consumer of the run's guide store (or reads its share of an
exported Parquet directory). A step:

1. takes one fresh delivery if there is one and the last one is used up
   (waiting for it only when the rank has used its records ``max_reuse``
   times on average), timing the wait;
2. fills a micro-batch of ``batch_size`` records: fresh ones first (a
   delivery larger than a batch is trained fresh over several steps, its
   remainder kept in the checkpoint), the rest drawn from the rank's replay
   pool (``student.replay``); the step's fresh ids go to the run's id ledger
   (``student.id_ledger``);
3. runs the objective, ``engine.backward``, ``engine.step`` (gradients are
   averaged over ranks by DeepSpeed), updates the EMA; in the last
   ``student.finetune.steps`` steps the loss also scores the student's own
   samples with the frozen teacher's field, and a fake field trained on them
   takes its step (``student.distribution``; its gradients averaged over ranks
   in one all-reduce);
4. keeps the delivery unacknowledged until a checkpoint holds it (``_Acks``).

Every ``checkpoint_every`` steps each rank writes its state (``student.engine_state``,
safetensors: the replay pool and the ids it trained on included) and rank 0 the
consolidated student, reported through ``ray.train.report``. Only then are the
deliveries the *previous* checkpoint holds acknowledged: whichever of the two
checkpoints a restarted worker group resumes from, every record it had not
acknowledged is either in that checkpoint or still pending under the rank's
consumer name, and the store hands those back to the rank first when it
returns. Losing a worker loses no record. Ranks stop together (an all-reduce of
"done", asked each step only once ``steps`` are done) when every produced record
has been delivered and no rank holds one the store has not handed it. The final
checkpoint acknowledges nothing: the driver acknowledges what it holds once Ray
Train has it (``cluster.student_pool``), so a rank that dies after its own final
report, before every rank's report is in, loses nothing either.

Nothing in a step waits on the host: the loss stays a tensor until a log line
(every ``log_every`` steps) reads it, and the replay pool lives on the training
device. Only checkpoints go through ``ray.train.report`` (a report waits for Ray
Train's controller to poll: every 2 s by default, 0.5 s as ``run_student_pool``
sets it).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from guide_store.atomic import write_text_atomically
from guide_store.redis_store import id_runs
from student.ds_config import deepspeed_config, student_optimizer, without_op_builds
from student.distribution import DistributionMatching, phase_teacher, real_images
from student.engine_state import (
    checkpoint_world,
    load_rank_state,
    pack_tree,
    read_rank_share,
    save_rank_state,
    shares,
    unpack_tree,
)
from student.fault_hooks import maybe_hold, maybe_kill
from student.guide_feed import GuideFeed, consumer_name, open_source, take_over_consumers
from student.id_ledger import LEDGER_DIR, RankLedger
from student.metrics import StudentMetrics
from student.networks import initial_student, student_arch
from student.objectives import time_inputs
from student.replay import ReplayPool
from student.settings import TRAIN_LOOP_KEY, StudentJob
from student.train_step import train_step
from teachers.checkpoint import CheckpointMeta, save_checkpoint
from teachers.device_plan import resolve_precision
from teachers.guides import PATHS
from teachers.precision import precision_dtype
from teachers.schedule import ema_decay_at, update_ema

__all__ = [
    "train_student_worker",
    "build_engine",
    "student_precision",
    "average_grads",
    "id_runs",
    "merge_runs",
]


def merge_runs(runs: list[list[int]]) -> list[list[int]]:
    """Runs sorted and joined where they touch; an overlap is kept (it means an id was consumed twice)."""
    out: list[list[int]] = []
    for start, count in sorted(runs):
        if out and start == out[-1][0] + out[-1][1]:
            out[-1][1] += count
        else:
            out.append([start, count])
    return out


class _Fresh:
    """The records of the rank's current delivery not yet trained fresh. A delivery larger than a batch is
    trained fresh over several steps; only once its last records are in a step is it one the rank holds
    (``_Acks``), and until then its remainder travels in the rank's checkpoint, so a group restored from it
    goes on with the remainder and the entry is let go as the checkpoint's."""

    def __init__(self):
        self.points: list[torch.Tensor] = []
        self.ids = torch.empty(0, dtype=torch.int64)
        self.entry: str | None = None

    def empty(self) -> bool:
        return self.ids.numel() == 0

    def put(self, entry: str | None, ids: torch.Tensor, points: list[torch.Tensor]) -> None:
        self.entry, self.ids, self.points = entry, ids, points

    def take(self, n: int) -> tuple[list[torch.Tensor], list[int], str | None]:
        """Up to ``n`` fresh records, their ids, and the entry when these were its last records."""
        chunk, ids = [p[:n] for p in self.points], self.ids[:n].tolist()
        self.points, self.ids = [p[n:] for p in self.points], self.ids[n:]
        done, self.entry = (self.entry, None) if self.empty() else (None, self.entry)
        return chunk, ids, done

    def state(self, data: dict) -> dict:
        """The remainder's tensors into ``data`` (``fresh/*``); returns what else rebuilds it."""
        if self.empty():
            return {"entry": None}
        data["fresh/ids"] = self.ids.clone()
        for i, p in enumerate(self.points):
            data[f"fresh/p{i}"] = p.detach().cpu().contiguous()
        return {"entry": self.entry, "points": len(self.points)}  # entry None: a joined remainder

    def load_state(self, meta: dict | None, data: dict, device: torch.device) -> None:
        """The remainder a checkpoint holds; a second one (an old rank taken over at another world size) is
        appended, its entry let go with the checkpoint's (``_Acks``), so the joined remainder names none."""
        if not meta or "points" not in meta:
            return
        ids, points = data["fresh/ids"], [data[f"fresh/p{i}"].to(device) for i in range(meta["points"])]
        if self.empty():
            self.put(meta["entry"], ids, points)
        else:
            self.put(None, torch.cat([self.ids, ids]), [torch.cat([a, b]) for a, b in zip(self.points, points)])


def _micro_batch(
    fresh: _Fresh, pool: ReplayPool, batch_size: int, g: torch.Generator
) -> tuple[list, list[int], str | None]:
    """Control points of one micro-batch on the pool's device: fresh records first, the rest from the pool;
    the fresh ids, and the entry whose last fresh records these were."""
    parts: list = []
    ids: list[int] = []
    done: str | None = None
    if not fresh.empty():
        chunk, ids, done = fresh.take(batch_size)
        pool.used += len(ids)
        parts.append(chunk)
    if len(ids) < batch_size:
        parts.append(pool.draw(batch_size - len(ids), g))
    return [torch.cat(ps) for ps in zip(*parts)], ids, done


def _receive(delivery, pool: ReplayPool, fresh: _Fresh) -> None:
    """A new delivery into the replay pool (reuse) and the fresh queue (its first use)."""
    pinned = pool.device.type == "cuda"
    points = [
        (p.pin_memory() if pinned else p).to(pool.device, torch.float32, non_blocking=True)
        for p in delivery.batch.control_points
    ]
    pool.add(points)
    fresh.put(delivery.id, delivery.batch.sample_id.to(torch.int64), points)


def _all_ranks(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _group_id(device: torch.device) -> int:
    """An id shared by the ranks of this worker group (rank 0 draws it), told apart from any group before it:
    the id ledger orders attempts by group, not by rank."""
    t = torch.randint(1, 2**62, (1,), dtype=torch.int64, generator=torch.Generator().manual_seed(time.time_ns()))
    t = t.to(device)
    dist.broadcast(t, src=0)
    return int(t.item())


def _mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value averaged over ranks, in one all-reduce (collective: every rank calls it)."""
    t = torch.tensor(values, device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def average_grads(params: list[torch.nn.Parameter]) -> None:
    """Each parameter's gradient averaged over ranks, in one all-reduce (collective)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def _distribution(job: StudentJob, device: torch.device) -> DistributionMatching | None:
    """The distribution-matching phase's fields (``student.distribution``; its frozen teacher ``phase_teacher``),
    or None without a phase."""
    if not job.dm_phase.steps:
        return None
    real = real_images(job.real_data, job.seed)
    return DistributionMatching(phase_teacher(job), job.dm_phase, device, average_grads, real)


def _save(
    job: StudentJob,
    engine,
    ema,
    pool: ReplayPool,
    fresh: _Fresh,
    rank: int,
    world: int,
    extra: dict,
    history: list[dict],
    metrics: dict,
    dm: DistributionMatching | None,
    before_rename=None,
) -> None:
    import ray.train  # see train_student_worker

    with tempfile.TemporaryDirectory() as d:
        pool_tensors, pool_meta = pool.state()
        data = {f"pool/{k}": v for k, v in pool_tensors.items()}
        extra = {**extra, "pool": pool_meta, "fresh": fresh.state(data)}
        if dm is not None:
            extra["distribution"] = pack_tree(dm.state(), data, "distribution")
        save_rank_state(d, engine, ema, rank, world, job.optim.zero_stage, extra, data, before_rename)
        if rank == 0:
            objective = job.objective.objective
            arch, arch_kwargs = student_arch(ema, job.network)
            meta = CheckpointMeta(
                arch=arch,
                arch_kwargs=arch_kwargs,
                data_shape=list(job.data_shape),
                time_inputs=time_inputs(objective),
                role="student",
                data_name=job.data_name,
                training=job.record,
                extra={"objective": objective, "path": job.path, "step": extra["step"], "world_size": world},
            )
            save_checkpoint(Path(d) / "student", ema, meta)
            write_text_atomically(Path(d) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _taken_over(primary: dict, parts: list[dict]) -> dict:
    """A rank's counters at another world size: the step and resumes of the checkpoint, the ids, totals and
    unacknowledged deliveries of the old ranks it takes over (``shares``; none for a rank the old world lacked)."""
    out = {
        "step": primary["step"],
        "resumes": primary.get("resumes", 0),
        "consumed": merge_runs([r for e in parts for r in e.get("consumed", [])]),
        "unacked": [u for e in parts for u in e.get("unacked", [])],
    }
    for key in _Ledger.TOTALS:
        if key != "resumes":
            out[key] = sum(e.get(key, 0) for e in parts)
    return out


def _restore(
    engine,
    ema,
    pool: ReplayPool,
    fresh: _Fresh,
    rank: int,
    world: int,
    zero_stage: int,
    dm: DistributionMatching | None,
) -> tuple[dict, list[dict], int]:
    """The checkpoint Ray Train hands this group (none: a fresh start): weights, optimizer, and the records of
    the old ranks this rank takes over; returns its counters, the metrics history and the old world size."""
    import ray.train  # see train_student_worker

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}, [], world
    with ckpt.as_directory() as d:
        old_world = checkpoint_world(d)
        extra, data = load_rank_state(d, engine, ema, rank, world, zero_stage)
        if dm is not None and "distribution" in extra:
            dm.load_state(unpack_tree(extra["distribution"], data))
        parts = [(extra, data)]
        if old_world != world:
            primary, read = rank if rank < old_world else 0, (extra, data)  # load_rank_state's file: not read again
            share = lambda j: read if j == primary else read_rank_share(d, j)  # noqa: E731
            parts = [share(j) for j in shares(rank, world, old_world)]
            extra = _taken_over(extra, [e for e, _ in parts])
            if not parts:  # a rank the pool grew by: a copy of an old rank's replay pool (reuse, not fresh records)
                copied, copied_data = share(rank % old_world)
                parts = [({"pool": copied["pool"]}, copied_data)]
        for part_extra, part_data in parts:
            if "pool" in part_extra:
                pool.merge_state(
                    {k[len("pool/") :]: v for k, v in part_data.items() if k.startswith("pool/")}, part_extra["pool"]
                )
            fresh.load_state(part_extra.get("fresh"), part_data, pool.device)
        hist_file = Path(d) / "metrics.jsonl"
        history = [json.loads(line) for line in hist_file.read_text().splitlines()] if hist_file.is_file() else []
    return extra, history, old_world


class _Acks:
    """The deliveries a rank holds unacknowledged, let go one checkpoint behind (see the module docstring).
    ``restored``: what the checkpoint the rank resumed from held unacknowledged (it holds them: let go)."""

    def __init__(self, source, restored: list[str]):
        self.source = source
        self.previous: list[str] = []
        self.since: list[str] = []
        source.ack(restored)

    def delivered(self, entry_id: str) -> None:
        self.since.append(entry_id)

    def held(self) -> list[str]:
        """Everything unacknowledged, as a checkpoint records it."""
        return self.previous + self.since

    def after_checkpoint(self) -> None:
        """The checkpoint before this one holds ``previous``: acknowledge them. (After the final checkpoint the
        driver acknowledges the rest, once Ray Train has every rank's report: ``cluster.student_pool``.)"""
        self.source.ack(self.previous)
        self.previous, self.since = self.since, []


class _Ledger:
    """What a rank counts: step, consumed sample ids (as runs), totals, the current log interval, the history.
    Saved in the rank's checkpoint (``extra``) and restored from it."""

    TOTALS = ("records_consumed", "guide_wait_s", "reclaimed_records", "resumes")

    def __init__(self, extra: dict, history: list[dict]):
        self.step = int(extra.get("step", 0))
        self.consumed = extra.get("consumed", [])
        self.totals = {k: extra.get(k, 0) for k in self.TOTALS}
        self.totals["resumes"] += 1 if extra else 0
        self.unacked_at_save: list[str] = extra.get("unacked", [])
        self.history = history
        self.run_start = time.monotonic() - (history[-1]["elapsed_s"] if history else 0.0)
        self._new_interval()

    def _new_interval(self) -> None:
        self.interval: dict[str, Any] = {"loss": 0.0, "steps": 0, "wait": 0.0, "fresh": 0, "start": time.monotonic()}

    def after_step(self, delivery, fresh_ids: list[int], waited: float, loss: torch.Tensor) -> None:
        """``fresh_ids``: the records the step trained fresh; ``loss``: the step's loss, still a tensor (read
        once per log interval, not per step)."""
        n_fresh = len(fresh_ids)
        if fresh_ids:
            self.consumed = merge_runs(self.consumed + id_runs(fresh_ids))
            self.totals["records_consumed"] += n_fresh
        if delivery is not None and delivery.reclaimed:
            self.totals["reclaimed_records"] += len(delivery.batch)
        self.step += 1
        self.totals["guide_wait_s"] += waited
        for key, value in (("loss", loss), ("steps", 1), ("wait", waited), ("fresh", n_fresh)):
            self.interval[key] += value

    def extra(self) -> dict:
        return {"step": self.step, "consumed": self.consumed, **self.totals}

    def close_interval(self, pool: ReplayPool, job: StudentJob, device: torch.device, world: int) -> dict:
        """One metrics.jsonl line (collective: every rank calls it at the same step): loss averaged and records
        summed over ranks; speed, wait and pool of this rank."""
        iv = self.interval
        seconds = max(1e-9, time.monotonic() - iv["start"])
        # one all-reduce for the three cross-rank figures
        loss, fresh, consumed = _mean_over_ranks(
            [float(iv["loss"]) / max(1, iv["steps"]), iv["fresh"], self.totals["records_consumed"]], device
        )
        record = {
            "step": self.step,
            "loss": loss,
            "lr": job.lr_at(self.step - 1),
            "steps_per_second": round(iv["steps"] / seconds, 3),
            "guide_wait_s": round(iv["wait"], 3),
            "wait_fraction": round(iv["wait"] / seconds, 3),
            "fresh_records": round(fresh * world),
            "records_consumed": round(consumed * world),
            "pool_records": pool.size,
            "reuse": round(pool.used / max(1, pool.received), 2),
            "elapsed_s": round(time.monotonic() - self.run_start, 3),
        }
        self.history.append(record)
        self._new_interval()
        return record

    def final_record(self, device: torch.device, world: int, used: dict) -> dict:
        """The last metrics line; ``used``: the device, precision and parameter dtype the rank trained with."""
        record = {
            "step": self.step,
            "final": True,
            "resumes": self.totals["resumes"],
            **used,
            "records_consumed": round(_mean_over_ranks([self.totals["records_consumed"]], device)[0] * world),
            "guide_wait_s": round(self.totals["guide_wait_s"], 3),
            "elapsed_s": round(time.monotonic() - self.run_start, 3),
        }
        self.history.append(record)
        return record


def student_precision(job: StudentJob, device: torch.device) -> str:
    """The precision this worker trains in: the plan's rule applied on the device Ray Train gave it."""
    on_gpu = device.type == "cuda"
    requested, key = job.precision
    return resolve_precision(requested, key, on_gpu, on_gpu and torch.cuda.is_bf16_supported())


def build_engine(job: StudentJob, world: int, device: torch.device, precision: str):
    """The student, its fp32 EMA copy and the DeepSpeed engine (a torch Adam handed over, so DeepSpeed
    compiles nothing); torch.distributed must be initialised. Returns ``(engine, ema)``."""
    import deepspeed  # only after DS_ACCELERATOR is set (train_student_worker, student.step_check)
    import deepspeed.ops

    without_op_builds(deepspeed.ops)
    torch.manual_seed(job.seed)  # identical initial weights on every rank
    model = initial_student(job).to(device)
    ema = copy.deepcopy(model).float().eval().requires_grad_(False)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=student_optimizer(job.optim, model.parameters()),
        config=deepspeed_config(job.optim, world, precision),
    )
    return engine, ema


def train_student_worker(train_loop_config: dict) -> None:
    """Ray Train worker entry: ``train_loop_config`` is ``{"job": StudentJob}`` (``StudentJob.of``)."""
    import ray.train  # Ray Train pulls in Ray Data and pandas (half a second): its workers need it, the CLI not
    import ray.util

    job: StudentJob = train_loop_config[TRAIN_LOOP_KEY]
    optim, feed, saving = job.optim, job.feed, job.saving
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported
        torch.set_num_threads(job.threads)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    precision = student_precision(job, device)
    dtype = precision_dtype(precision)
    engine, ema = build_engine(job, world, device, precision)
    used = {
        "device": device.type,
        "precision": precision,
        "parameter_dtype": str(next(engine.module.parameters()).dtype).removeprefix("torch."),
    }
    pool, fresh = ReplayPool(feed.replay_records, feed.max_reuse, device), _Fresh()
    dm = _distribution(job, device)
    extra, history, old_world = _restore(engine, ema, pool, fresh, rank, world, optim.zero_stage, dm)
    ledger = _Ledger(extra, history)
    run_folder = Path(job.run_path)
    if ledger.totals["resumes"]:
        print(
            f"[student rank {rank}] resumed at step {ledger.step} (resume {ledger.totals['resumes']})"
            + (f" with {world} rank(s), the checkpoint's {old_world} resharded" if old_world != world else "")
        )
    source, target = open_source(feed, job.run, rank, world, job.data_shape, PATHS[job.path])
    # what the checkpoint trained on but held unacknowledged (a delivery whose remainder it holds included) is
    # let go before any read (the read-ahead starts at once, and would hand it back to be trained on twice)
    acks = _Acks(source, ledger.unacked_at_save)
    # then what ranks the pool no longer has still hold pending, in no checkpoint, is this rank's to train
    adopted = take_over_consumers(source, job.run, rank, world)
    if adopted:
        print(f"[student rank {rank}] took over {adopted} delivery(ies) pending under ranks the pool no longer has")
    node = ray.util.get_node_ip_address()
    ids = RankLedger(
        run_folder / LEDGER_DIR,
        rank,
        world,
        ledger.step,
        node,
        group=_group_id(device),
        took_over=adopted,
        from_world=old_world,
    )
    guide_feed = GuideFeed(source, consumer_name(job.run, rank), target, feed.guide_timeout_s, feed.prefetch)
    g = torch.Generator().manual_seed(job.seed * 1_000_003 + 7919 * rank + ledger.step)
    metrics = StudentMetrics(job.run, rank)

    checkpointed = {"step": ledger.step}  # the step of the rank's latest checkpoint

    def save(record: dict, final: bool = False) -> None:
        ids.flush()  # the steps this checkpoint holds are in the ledger before anyone can resume from it
        held = acks.held() + ([fresh.entry] if fresh.entry else [])
        inside = (
            (lambda: maybe_kill("during_final_checkpoint", job.test_kills, rank, world, run_folder)) if final else None
        )
        _save(
            job,
            engine,
            ema,
            pool,
            fresh,
            rank,
            world,
            {**ledger.extra(), "unacked": held},
            ledger.history,
            record,
            dm,
            inside,
        )
        checkpointed["step"] = ledger.step
        if not final:
            acks.after_checkpoint()
            maybe_kill("after_checkpoint", job.test_kills, rank, world, run_folder)

    # Ranks step in lockstep (same step count, restored from the same checkpoint), so the stop question,
    # a collective, is asked only once the steps are done: no all-reduce and no store stats per step before.
    # A rank with fresh records of its last delivery still untrained is not done either.
    while not (ledger.step >= optim.steps and _all_ranks(fresh.empty() and guide_feed.exhausted(), device)):
        delivery, waited = None, 0.0
        if fresh.empty():
            delivery, waited = guide_feed.next(need=not pool.can_draw(optim.batch_size))
            if delivery is not None:
                _receive(delivery, pool, fresh)
                maybe_hold(job.test_kills, rank, node, run_folder, checkpointed["step"] > 0)
        if fresh.empty() and pool.size == 0:
            raise RuntimeError(
                f"rank {rank}: the guide source is exhausted and this rank never received a record "
                f"(source stats: {source.stats()})"
            )
        points, fresh_ids, done = _micro_batch(fresh, pool, optim.batch_size, g)
        in_phase = job.in_dm_phase(ledger.step)  # distribution matching (student.distribution) in the last steps
        loss = train_step(
            engine, job, [p.to(dtype) for p in points], g, job.lr_at(ledger.step), dm if in_phase else None
        )
        decay = job.dm_phase.ema_decay if in_phase else optim.ema_decay
        update_ema(ema, engine.module, ema_decay_at(ledger.step, decay))
        if done is not None:
            acks.delivered(done)
        ledger.after_step(delivery, fresh_ids, waited, loss.detach().float())
        ids.step(ledger.step, fresh_ids)
        metrics.record_step(len(fresh_ids), waited)
        step = ledger.step
        if step % saving.log_every == 0 or step % saving.checkpoint_every == 0:
            record = ledger.close_interval(pool, job, device, world)
            if in_phase:
                record["phase"] = "distribution"  # its loss: regression_weight x the objective's + the term
                record.update(dm.last_classifier if dm is not None else {})  # the real-vs-generated classifier
            metrics.record_interval(step, record["loss"], record["steps_per_second"])
            if rank == 0:  # the run's metrics.jsonl as the run goes (the pool copies the checkpoint's over it)
                with (run_folder / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if step % saving.checkpoint_every == 0:
                save(record)
            # a log line without a checkpoint is not reported to Ray Train: its controller takes one report per
            # worker per poll (2 s by default) and `report` blocks until then, which capped a 50 steps/s rank logging
            # every 25 steps at 12; the line is kept in the history the next checkpoint writes, and the
            # dashboard has it at once through `metrics`
    guide_feed.close()
    if acks.since and checkpointed["step"] >= optim.steps:  # deliveries since a checkpoint at or past `steps`
        maybe_kill("before_final_report", job.test_kills, rank, world, run_folder)
    save(ledger.final_record(device, world, used), final=True)
    maybe_kill("after_final_report", job.test_kills, rank, world, run_folder)
