"""The teacher actor: loads teacher checkpoints and turns blocks of sample ids into guide records.

``TeacherWorker`` is a plain class; ``ray.remote`` is applied where it is
started (the controller), so it is usable and testable without Ray. Its
records are made by ``build_block``, a pure function of the run
configuration, the data, the teachers and the block id, so a block handed out
again after an actor died is regenerated bit for bit, and the store's
per-block put guard keeps it in the stream exactly once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import ray
import torch
from torch import nn

from guide_store.open_store import open_store
from guide_store.schema import GuideBatch
from guide_store.settings import StoreSettings
from teachers.device_plan import guides_precision_setting, resolve_precision
from teachers.ensemble import TeacherSpec, load_teacher
from teachers.guides import couple_on_path, from_coupling, make_guides
from teachers.metrics import TeacherMetrics
from teachers.precision import autocast
from teachers.settings import DataSettings, GuidesSettings, TeacherPoolSettings
from teachers.train_teacher import load_run_data

__all__ = [
    "GuideRun",
    "LoadedTeachers",
    "load_teachers",
    "load_placed_teachers",
    "block_ids",
    "build_block",
    "TeacherWorker",
]


class GuideRun(Protocol):
    """What guide production reads of a run's configuration: its name, seed and ``precision``, and its
    ``data``, ``guides`` and ``store`` sections."""

    # read-only (properties): the frozen settings that satisfy it cannot be assigned to
    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def precision(self) -> str: ...

    @property
    def data(self) -> DataSettings: ...

    @property
    def guides(self) -> GuidesSettings: ...

    @property
    def store(self) -> StoreSettings: ...


@dataclass
class LoadedTeachers:
    """The coupling teacher, one teacher per guide, and their ids and versions (for every record)."""

    coupling: nn.Module
    guides: list[nn.Module]
    ids: list[str]
    versions: list[str]
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # resolved: fp32, or bf16/fp16 autocast of the teachers' forward passes

    def to(self, device: str | torch.device, precision: str = "fp32") -> "LoadedTeachers":
        self.device, self.precision = torch.device(device), precision
        for m in {id(m): m for m in (self.coupling, *self.guides)}.values():
            m.to(self.device)
        return self


def pick_device(num_gpus: float) -> torch.device:
    """CUDA when the actor was given a GPU share and one is visible; the CPU otherwise."""
    return torch.device("cuda") if num_gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def _version(teacher: TeacherSpec) -> str:
    """A short content hash of the weights (an ensemble's members' in order): two actors with the same
    version made the same guides."""
    h = hashlib.sha256()
    for checkpoint in teacher.checkpoints:
        for weights in sorted(Path(checkpoint).glob("*.safetensors")):
            h.update(weights.read_bytes())
    return h.hexdigest()[:12]


def load_teachers(pool: TeacherPoolSettings, n_guides: int, data_shape: tuple[int, ...]) -> LoadedTeachers:
    """Load a pool's teachers (refusing a data-shape mismatch): one checkpoint serves every guide, and an
    ensemble (all of them, averaged) couples and makes every guide."""
    coupling = pool.first_teacher()
    per_guide = pool.guide_teachers(n_guides)
    models = {t: load_teacher(t, data_shape) for t in dict.fromkeys([coupling, *per_guide])}
    return LoadedTeachers(
        coupling=models[coupling],
        guides=[models[t] for t in per_guide],
        ids=[f"{pool.name}:{t.short_name}" for t in per_guide],
        versions=[_version(t) for t in per_guide],
    )


def load_placed_teachers(cfg: GuideRun, pool: TeacherPoolSettings, data_shape: tuple[int, ...]) -> LoadedTeachers:
    """A pool's teachers as its actors run them: on the GPU when the pool asks for a share and one is
    visible (``pick_device``), in the run's precision resolved on that device."""
    teachers = load_teachers(pool, cfg.guides.n_guides, data_shape)
    device = pick_device(pool.num_gpus)
    on_gpu = device.type == "cuda"
    requested, key = guides_precision_setting(cfg.guides.precision, cfg.precision)
    return teachers.to(device, resolve_precision(requested, key, on_gpu, on_gpu and torch.cuda.is_bf16_supported()))


def block_ids(g: GuidesSettings, block: int) -> torch.Tensor:
    """Sample ids of a block: ``[block * size, min((block + 1) * size, num_samples))``."""
    return torch.arange(block * g.block_size, min((block + 1) * g.block_size, g.num_samples))


@torch.no_grad()
def build_block(cfg: GuideRun, data: torch.Tensor, teachers: LoadedTeachers, block: int, producer: str) -> GuideBatch:
    """The guide records of one block (``teachers.guides``); the same inputs give the same bits."""
    g = cfg.guides
    ids = block_ids(g, block)
    taus = g.guide_times()
    shared = from_coupling(g.coupling_settings(), g.rule, taus, [m is teachers.coupling for m in teachers.guides])
    with autocast(teachers.device, teachers.precision):
        at = [tau for tau, s in zip(taus, shared) if s]
        x0, x1, points = couple_on_path(
            ids, cfg.seed, data, teachers.coupling, g.coupling_settings(), teachers.device, at=at
        )
        known = [dict(zip(at, points)).get(tau) for tau in taus]  # taus are distinct under the trajectory rule
        guides = (
            make_guides(x0, x1, teachers.guides, g.rule, taus, g.solve_solver, g.solve_steps, known) if taus else []
        )
    # records are encoded from host memory, in fp32 (the store's dtype setting decides what is kept)
    x0, x1, guides = x0.float().cpu(), x1.float().cpu(), [t.float().cpu() for t in guides]
    return GuideBatch(
        sample_id=ids,
        x0=x0,
        x1=x1,
        guides=guides,
        taus=taus,
        teachers=teachers.ids,
        teacher_versions=teachers.versions,
        guide_rule=g.rule,
        coupling=g.coupling,
        run=cfg.name,
        run_seed=cfg.seed,
        producer=producer,
    )


class TeacherWorker:
    """Body of one teacher actor: asks the controller for blocks, builds them, puts them in the store.

    On (re)start it registers with the controller, which hands out again any block it held when it
    died, and starts its loop in a thread, so a restarted actor resumes by itself.
    """

    def __init__(self, name: str, cfg: GuideRun, pool: TeacherPoolSettings, store_url: str, controller=None):
        self.cfg = cfg
        self.pool = pool
        torch.set_num_threads(self.pool.threads)
        self.name = name
        self.data = load_run_data(self.cfg.data, self.cfg.seed)
        self.teachers = load_placed_teachers(self.cfg, self.pool, self.data.data_shape)
        st = self.cfg.store
        self.store = open_store(
            store_url,
            self.cfg.name,
            dtype=st.dtype,
            max_backlog_records=st.max_backlog_records,
            max_backlog_bytes=st.max_backlog_bytes,
            put_timeout_s=st.put_timeout_s,
        )
        self.controller = controller
        self._drain = threading.Event()
        self.blocks_done = 0
        self.metrics = None
        if controller is not None:
            self.metrics = TeacherMetrics(self.cfg.name, name)

            ray.get(controller.register.remote(name, ray.util.get_node_ip_address()))
            self._thread = threading.Thread(target=self._loop, name=f"{name}-loop", daemon=True)
            self._thread.start()

    def produce(self, block: int) -> dict:
        """Build and put one block; returns what the controller records."""
        start = time.perf_counter()
        batch = build_block(self.cfg, self.data.train, self.teachers, block, self.name)
        entry = self.store.put(batch, key=f"block-{block}")
        self.blocks_done += 1
        seconds = time.perf_counter() - start
        if self.metrics is not None and entry is not None:
            self.metrics.record(len(batch), seconds)
        return {
            "block": block,
            "records": len(batch),
            "entry": entry,
            "seconds": seconds,
            "device": self.teachers.device.type,
            "precision": self.teachers.precision,
        }

    def _loop(self) -> None:
        try:
            while not self._drain.is_set():
                block = ray.get(self.controller.next_block.remote(self.name))
                if block is None:
                    break
                ray.get(self.controller.block_done.remote(self.name, self.produce(block)))
        except Exception as err:  # the controller hands the block out again and tells the job, with the error
            self.controller.worker_failed.remote(self.name, f"{type(err).__name__}: {err}")
            return
        self.controller.worker_idle.remote(self.name)

    def drain(self) -> int:
        """Finish the current block, then stop asking for more; returns blocks produced by this incarnation."""
        self._drain.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join()
        return self.blocks_done

    def ping(self) -> str:
        return self.name
