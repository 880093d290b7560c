"""Real DeepSpeed ranks (gloo, CPU) saving their state at one world size and resuming at another, run as a script
by ``test_reshard.py`` so torch.distributed stays out of the test process.

    ds_reshard_worker.py DIR PHASE PORT RANK WORLD CONFIG_JSON [CONFIG_JSON ...]   (each config in DIR/K)

Every phase trains the same velocity-field student on a fixed, deterministic loss: step ``s`` uses the
records ``batch(s)`` (``2 * batch_size`` of them), split in rank order over the world, so one rank with all of
them and two ranks with half each take the same optimizer step (DeepSpeed averages gradients over ranks).

- ``train``: ``STEPS`` steps from scratch, then the rank state saved under ``DIR/WORLD``;
- ``resume-FROM``: load the state written by ``FROM`` ranks into this world (``load_rank_state``: resharded
  when the world sizes differ), take step ``STEPS``, and write the weights as ``DIR/after-FROM-to-WORLD``;
- ``train`` also takes step ``STEPS`` after saving and writes ``DIR/after-WORLD-to-WORLD`` (the uninterrupted
  reference).
"""

import json
import os
import sys
from pathlib import Path

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported (build_engine imports it)

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from student.engine_state import load_rank_state, save_rank_state
from student.settings import StudentJob
from student.train_loop import build_engine
from cluster.config import parse_config

STEPS = 3


def batch(step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(size, 2, generator=g), torch.rand(size, generator=g), torch.randn(size, 2, generator=g)


def take_step(engine, step: int, rank: int, world: int, per_step: int) -> None:
    x, t, y = (part.chunk(world)[rank] for part in batch(step, per_step))
    loss = (engine(x, t) - y).pow(2).mean()
    engine.backward(loss)
    engine.step()


def main(folder: str, phase: str, port: str, rank: str, world: str, *config_files: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world)
    dist.init_process_group("gloo", rank=int(rank), world_size=int(world))
    for k, config_file in enumerate(config_files):  # one process group, an engine per config
        run_phase(config_file, Path(folder) / str(k), phase, int(rank), world)
    dist.destroy_process_group()


def run_phase(config_file: str, out: Path, phase: str, rank_i: int, world: str) -> None:
    world_i = int(world)
    torch.manual_seed(0)
    cfg = parse_config(json.loads(Path(config_file).read_text()))
    job = StudentJob.of(cfg, None, (2,), None)
    engine, ema = build_engine(job, world_i, torch.device("cpu"), "fp32")
    per_step = 2 * job.optim.batch_size
    if phase == "train":
        for step in range(STEPS):
            take_step(engine, step, rank_i, world_i, per_step)
        save_rank_state(out / world, engine, ema, rank_i, world_i, job.optim.zero_stage, {"step": STEPS})
        source = world
    else:
        source = phase.removeprefix("resume-")
        extra, _ = load_rank_state(out / source, engine, ema, rank_i, world_i, job.optim.zero_stage)
        assert extra["step"] == STEPS, extra
    take_step(engine, STEPS, rank_i, world_i, per_step)
    if rank_i == 0:
        save_file(
            {k: v.detach().contiguous() for k, v in engine.module.state_dict().items()},
            str(out / f"after-{source}-to-{world}.safetensors"),
        )
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
