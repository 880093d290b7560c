"""A few real DeepSpeed student steps on the CPU in a process of their own (one gloo rank), run as a script
by ``test_ds_step.py`` so that torch.distributed and DeepSpeed's global state stay out of the test process.

    ds_step_worker.py PORT CONFIG_JSON [CONFIG_JSON ...]   -> one JSON line per config: dtypes seen, learning
                                                             rates, losses (one process group, an engine each),
                                                             and how far a resumed engine's next step lands from
                                                             the original's (its state saved and loaded back)
"""

import json
import os
import sys
import tempfile

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported (build_engine imports it)

import torch
import torch.distributed as dist

from student.engine_state import load_rank_state, save_rank_state
from student.settings import StudentJob
from student.train_loop import build_engine, student_precision
from student.train_step import train_step
from cluster.config import parse_config


def main(port: str, *config_files: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    for config_file in config_files:
        print(json.dumps(steps(parse_config(json.loads(open(config_file).read())))), flush=True)
    dist.destroy_process_group()


def steps(cfg) -> dict:
    job = StudentJob.of(cfg, None, (2,), None)
    device = torch.device("cpu")
    precision = student_precision(job, device)
    engine, ema = build_engine(job, 1, device, precision)
    outputs = []
    engine.module.register_forward_hook(lambda m, args, out: outputs.append(str(out.dtype)))
    g = torch.Generator().manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    lrs, losses, loss_dtypes = [], [], []
    for step in range(4):
        loss = _step(
            engine,
            job,
            step,
            [torch.randn(job.optim.batch_size, 2, generator=g).to(device, dtype) for _ in range(4)],
            g,
        )
        lrs.append(engine.optimizer.param_groups[0]["lr"])
        losses.append(loss.item())
        loss_dtypes.append(str(loss.dtype))
    return {
        "resume_max_diff": _resume_gap(job, engine, ema, device, precision, dtype),
        "precision": precision,
        "optimizer": type(engine.optimizer).__name__,
        "parameter_dtypes": sorted({str(p.dtype) for p in engine.module.parameters()}),
        "ema_dtypes": sorted({str(p.dtype) for p in ema.parameters()}),
        "forward_dtypes": sorted(set(outputs)),
        "loss_dtypes": sorted(set(loss_dtypes)),
        "lrs": lrs,
        "losses": losses,
    }


def _step(engine, job, step: int, points, g) -> torch.Tensor:
    return train_step(engine, job, points, g, job.optim.lr_at(step))


def _resume_gap(job, engine, ema, device, precision, dtype) -> float:
    """Save this engine's state, load it into a fresh engine, take the same fifth step on both: the largest
    weight difference after it (0 when weights, optimizer state and step counts all came back)."""
    with tempfile.TemporaryDirectory() as d:
        save_rank_state(d, engine, ema, 0, 1, job.optim.zero_stage, {"step": 4})
        resumed, resumed_ema = build_engine(job, 1, device, precision)
        extra, _ = load_rank_state(d, resumed, resumed_ema, 0, 1, job.optim.zero_stage)
    assert extra == {"step": 4}, extra
    g = torch.Generator().manual_seed(1)
    points = [torch.randn(job.optim.batch_size, 2, generator=g).to(device, dtype) for _ in range(4)]
    for e in (engine, resumed):
        _step(e, job, 4, points, torch.Generator().manual_seed(2))
    return max(
        (a.float() - b.float()).abs().max().item()
        for a, b in zip(engine.module.parameters(), resumed.module.parameters())
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
