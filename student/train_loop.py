"""The student training loop that runs in each Ray Train worker (DeepSpeed data parallel).

Each rank is one consumer of the run's guide store (or reads its share of an
exported Parquet directory). A step:

1. takes one fresh delivery if there is one (waiting for it only when the
   rank has used its records ``max_reuse`` times on average), timing the wait;
2. fills a micro-batch of ``batch_size`` records: the fresh ones first, the
   rest drawn from the rank's replay pool (``student.replay``);
3. runs the objective, ``engine.backward``, ``engine.step`` (gradients are
   averaged over ranks by DeepSpeed), updates the EMA;
4. acknowledges the delivery: only after the optimizer step that used it.

Ranks stop together (an all-reduce of "done") once ``steps`` are done *and*
every produced record is acknowledged, so nothing is left in the store. Every
``checkpoint_every`` steps each rank writes its state (``student.engine_state``,
safetensors) and rank 0 the consolidated student, reported through
``ray.train.report``; a restarted worker group resumes from the latest one, and
the records its dead consumers held are reclaimed by the store.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from student.ds_config import deepspeed_config, student_optimizer, without_op_builds
from student.engine_state import load_rank_state, save_rank_state
from student.guide_feed import GuideFeed, consumer_name, open_source
from student.metrics import StudentMetrics
from student.networks import build_student, init_from_teacher
from student.objectives import ObjectiveSettings, objective_loss, time_inputs
from student.replay import ReplayPool
from teachers.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from teachers.config import NetworkConfig, RunConfig, StudentConfig, parse_config
from teachers.device_plan import resolve_precision, student_precision_setting
from teachers.precision import precision_dtype
from teachers.schedule import ema_decay_at, lr_at, update_ema

__all__ = ["train_student_worker", "build_engine", "student_precision", "id_runs", "merge_runs"]


def id_runs(ids: list[int]) -> list[list[int]]:
    """Sorted ids as ``[[start, count], ...]`` runs of consecutive values."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def merge_runs(runs: list[list[int]]) -> list[list[int]]:
    """Runs sorted and joined where they touch; an overlap is kept (it means an id was consumed twice)."""
    out: list[list[int]] = []
    for start, count in sorted(runs):
        if out and start == out[-1][0] + out[-1][1]:
            out[-1][1] += count
        else:
            out.append([start, count])
    return out


def _micro_batch(delivery, pool: ReplayPool, batch_size: int, g: torch.Generator) -> tuple[list, int]:
    """Control points of one micro-batch: fresh records first, the rest from the pool; and the fresh count."""
    parts, n_fresh = [], 0
    if delivery is not None:
        fresh = delivery.batch.control_points
        pool.add(fresh)
        n_fresh = min(batch_size, fresh[0].shape[0])
        pool.used += n_fresh
        parts.append([p[:n_fresh].float() for p in fresh])
    if n_fresh < batch_size:
        parts.append(pool.draw(batch_size - n_fresh, g))
    return [torch.cat(ps) for ps in zip(*parts)], n_fresh


def _build(payload: dict, device: torch.device):
    cfg = payload["config"]
    sc, net = cfg["student"], cfg["student"]["network"] or cfg["teacher"]["network"]
    network = NetworkConfig.model_validate(net)
    model = build_student(network.arch, tuple(payload["data_shape"]), network.kwargs(), sc["objective"])
    if payload.get("init_checkpoint"):
        teacher, _ = load_checkpoint(payload["init_checkpoint"], expect_data_shape=tuple(payload["data_shape"]))
        init_from_teacher(model, teacher)
    return model.to(device), network


def _all_ranks(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value averaged over ranks, in one all-reduce (collective: every rank calls it)."""
    import torch.distributed as dist

    t = torch.tensor(values, device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def _save(payload: dict, engine, ema, network, pool: ReplayPool, rank: int, world: int, extra: dict,
          history: list[dict], metrics: dict) -> None:
    import ray.train

    cfg = payload["config"]
    with tempfile.TemporaryDirectory() as d:
        pool_tensors, pool_meta = pool.state()
        save_rank_state(d, engine, ema, rank, world, cfg["student"]["zero_stage"], {**extra, "pool": pool_meta},
                        {f"pool/{k}": v for k, v in pool_tensors.items()})
        if rank == 0:
            meta = CheckpointMeta(arch=network.arch, arch_kwargs=network.kwargs(), data_shape=list(payload["data_shape"]),
                                  time_inputs=time_inputs(cfg["student"]["objective"]), role="student",
                                  data_name=cfg["data"]["name"], training=cfg,
                                  extra={"objective": cfg["student"]["objective"], "path": cfg["guides"]["path"],
                                         "step": extra["step"], "world_size": world})
            save_checkpoint(Path(d) / "student", ema, meta)
            (Path(d) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _restore(engine, ema, pool: ReplayPool, rank: int, world: int, zero_stage: int) -> tuple[dict, list[dict]]:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}, []
    with ckpt.as_directory() as d:
        extra, data = load_rank_state(d, engine, ema, rank, world, zero_stage)
        if "pool" in extra:
            pool.load_state({k[len("pool/"):]: v for k, v in data.items() if k.startswith("pool/")}, extra["pool"])
        hist_file = Path(d) / "metrics.jsonl"
        history = [json.loads(line) for line in hist_file.read_text().splitlines()] if hist_file.is_file() else []
    return extra, history


class _Ledger:
    """What a rank counts: step, consumed sample ids (as runs), totals, the current log interval, the history.
    Saved in the rank's checkpoint (``extra``) and restored from it."""

    TOTALS = ("records_consumed", "guide_wait_s", "reclaimed_records", "resumes")

    def __init__(self, extra: dict, history: list[dict]):
        self.step = int(extra.get("step", 0))
        self.consumed = extra.get("consumed", [])
        self.totals = {k: extra.get(k, 0) for k in self.TOTALS}
        self.totals["resumes"] += 1 if extra else 0
        self.history = history
        self.run_start = time.monotonic() - (history[-1]["elapsed_s"] if history else 0.0)
        self._new_interval()

    def _new_interval(self) -> None:
        self.interval = {"loss": 0.0, "steps": 0, "wait": 0.0, "fresh": 0, "start": time.monotonic()}

    def after_step(self, delivery, n_fresh: int, waited: float, loss: float) -> None:
        if delivery is not None:
            self.consumed = merge_runs(self.consumed + id_runs(delivery.batch.sample_id.tolist()))
            self.totals["records_consumed"] += len(delivery.batch)
            self.totals["reclaimed_records"] += len(delivery.batch) if delivery.reclaimed else 0
        self.step += 1
        self.totals["guide_wait_s"] += waited
        for key, value in (("loss", loss), ("steps", 1), ("wait", waited), ("fresh", n_fresh)):
            self.interval[key] += value

    def extra(self) -> dict:
        return {"step": self.step, "consumed": self.consumed, **self.totals}

    def close_interval(self, pool: ReplayPool, sc: dict, device: torch.device, world: int) -> dict:
        """One metrics.jsonl line (collective: every rank calls it at the same step): loss averaged and records
        summed over ranks; speed, wait and pool of this rank."""
        iv = self.interval
        seconds = max(1e-9, time.monotonic() - iv["start"])
        # one all-reduce for the three cross-rank figures
        loss, fresh, consumed = _mean_over_ranks([iv["loss"] / max(1, iv["steps"]), iv["fresh"],
                                                  self.totals["records_consumed"]], device)
        record = {"step": self.step, "loss": loss,
                  "lr": lr_at(self.step - 1, sc["lr"], sc["warmup_steps"], sc["steps"]),
                  "steps_per_second": round(iv["steps"] / seconds, 3),
                  "guide_wait_s": round(iv["wait"], 3), "wait_fraction": round(iv["wait"] / seconds, 3),
                  "fresh_records": round(fresh * world), "records_consumed": round(consumed * world),
                  "pool_records": pool.size, "reuse": round(pool.used / max(1, pool.received), 2),
                  "elapsed_s": round(time.monotonic() - self.run_start, 3)}
        self.history.append(record)
        self._new_interval()
        return record

    def final_record(self, device: torch.device, world: int, used: dict) -> dict:
        """The last metrics line; ``used``: the device, precision and parameter dtype the rank trained with."""
        record = {"step": self.step, "final": True, "resumes": self.totals["resumes"], **used,
                  "records_consumed": round(_mean_over_ranks([self.totals["records_consumed"]], device)[0] * world),
                  "guide_wait_s": round(self.totals["guide_wait_s"], 3),
                  "elapsed_s": round(time.monotonic() - self.run_start, 3)}
        self.history.append(record)
        return record


def student_precision(cfg: RunConfig, device: torch.device) -> str:
    """The precision this worker trains in: the plan's rule applied on the device Ray Train gave it."""
    on_gpu = device.type == "cuda"
    requested, key = student_precision_setting(cfg)
    return resolve_precision(requested, key, on_gpu, on_gpu and torch.cuda.is_bf16_supported())


def build_engine(payload: dict, world: int, device: torch.device, precision: str):
    """The student, its fp32 EMA copy and the DeepSpeed engine (a torch Adam handed over, so DeepSpeed
    compiles nothing); torch.distributed must be initialised. Returns ``(engine, ema, network)``."""
    import deepspeed  # imported after DS_ACCELERATOR is set (train_student_worker)
    import deepspeed.ops

    without_op_builds(deepspeed.ops)
    sc = StudentConfig.model_validate(payload["config"]["student"])
    torch.manual_seed(payload["config"]["seed"])  # identical initial weights on every rank
    model, network = _build(payload, device)
    ema = copy.deepcopy(model).float().eval().requires_grad_(False)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=student_optimizer(sc, model.parameters()),
                                           config=deepspeed_config(sc, world, precision))
    return engine, ema, network


def train_student_worker(payload: dict) -> None:
    """Ray Train worker entry: ``payload`` holds the resolved run config (JSON), ``store_url``, ``data_shape``
    and ``init_checkpoint`` (a teacher to start from, or ``None``)."""
    import ray.train

    cfg, sc = payload["config"], payload["config"]["student"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported
        torch.set_num_threads(sc["threads"])
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    precision = student_precision(parse_config(cfg), device)
    dtype = precision_dtype(precision)
    engine, ema, network = build_engine(payload, world, device, precision)
    used = {"device": device.type, "precision": precision,
            "parameter_dtype": str(next(engine.module.parameters()).dtype).removeprefix("torch.")}
    pool = ReplayPool(sc["replay_records"], sc["max_reuse"])
    ledger = _Ledger(*_restore(engine, ema, pool, rank, world, sc["zero_stage"]))
    if ledger.totals["resumes"]:
        print(f"[student rank {rank}] resumed at step {ledger.step} (resume {ledger.totals['resumes']})")
    source, target = open_source(payload, rank, world, tuple(payload["data_shape"]))
    feed = GuideFeed(source, consumer_name(cfg["name"], rank), target, sc["guide_timeout_s"])
    settings = ObjectiveSettings(sc["time_sampling"], sc["endpoint_share"], sc["diagonal_share"])
    g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + 7919 * rank + ledger.step)
    metrics = StudentMetrics(cfg["name"], rank)

    def save(record: dict) -> None:
        _save(payload, engine, ema, network, pool, rank, world, ledger.extra(), ledger.history, record)

    while not _all_ranks(ledger.step >= sc["steps"] and feed.drained(), device):
        delivery, waited = feed.next(need=not pool.can_draw(sc["batch_size"]))
        if delivery is None and pool.size == 0:
            raise RuntimeError(f"rank {rank}: the guide source is exhausted and this rank never received a record "
                               f"(source stats: {source.stats()})")
        points, n_fresh = _micro_batch(delivery, pool, sc["batch_size"], g)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr_at(ledger.step, sc["lr"], sc["warmup_steps"], sc["steps"])
        loss = objective_loss(sc["objective"], engine, [p.to(device, dtype) for p in points], settings, g)
        engine.backward(loss)
        engine.step()
        update_ema(ema, engine.module, ema_decay_at(ledger.step, sc["ema_decay"]))
        if delivery is not None:
            source.ack([delivery.id])  # only after the optimizer step that used it
        ledger.after_step(delivery, n_fresh, waited, loss.item())
        metrics.record_step(n_fresh, waited)
        step = ledger.step
        if step % sc["log_every"] == 0 or step % sc["checkpoint_every"] == 0:
            record = ledger.close_interval(pool, sc, device, world)
            metrics.record_interval(step, record["loss"], record["steps_per_second"])
            if step % sc["checkpoint_every"] == 0:
                save(record)
            else:
                ray.train.report(record)
    save(ledger.final_record(device, world, used))
