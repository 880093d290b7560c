"""One real student step, as a rank of the pool would take it, on random control points: the pre-flight check
that the student's network, objective, precision and DeepSpeed engine work on a device before a run spends
minutes training teachers. Run it in a fresh process (it sets up a one-rank process group and
``DS_ACCELERATOR``): ``python -m student.step_check < SETTINGS_JSON`` prints one JSON line (the settings
come on standard input, so a password in them never shows in the process list)."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from guide_store.embedded import free_port

from student.objectives import ObjectiveSettings, objective_loss, path_degree
from student.train_loop import build_engine, student_precision
from teachers.config import parse_config
from teachers.precision import precision_dtype

__all__ = ["student_step", "checked_step", "main"]


def student_step(payload: dict) -> dict:
    """Build the engine exactly as ``student.train_loop`` does, for a world of one rank, and take one step of
    ``student.batch_size`` records. ``payload`` is the worker payload (``config``, ``data_shape``,
    ``init_checkpoint`` None, ``store_url`` None) and ``device`` (``cpu`` or ``cuda``). Returns the device, precision, parameter dtype, loss and
    seconds."""
    start = time.perf_counter()
    # a world of one rank, whatever a launcher (torchrun, SLURM) left in the environment
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    on_gpu = payload.get("device", "cpu") == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("the run's student computes on a GPU, but none is visible to this process")
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported
        torch.set_num_threads(1)

    sc = payload["config"]["student"]
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    precision = student_precision(parse_config(payload["config"]), device)
    dtype = precision_dtype(precision)
    engine, _, _ = build_engine(payload, 1, device, precision)
    degree = path_degree(payload["config"]["guides"]["path"])
    g = torch.Generator().manual_seed(0)
    shape = (sc["batch_size"], *payload["data_shape"])
    points = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(degree + 1)]
    settings = ObjectiveSettings(sc["time_sampling"], sc["endpoint_share"], sc["diagonal_share"])
    loss = objective_loss(sc["objective"], engine, points, settings, g)
    engine.backward(loss)
    engine.step()
    value = float(loss.detach().float())
    if not torch.isfinite(torch.tensor(value)):
        raise RuntimeError(f"the student's first loss is {value}")
    param = next(engine.module.parameters())
    return {"device": str(device), "precision": precision, "dtype": str(dtype).replace("torch.", ""), "param_dtype":
            str(param.dtype).replace("torch.", ""), "loss": value, "seconds": round(time.perf_counter() - start, 2)}


def checked_step(payload: dict) -> dict:
    """``student_step`` with any failure turned into ``{"ok": False, "error": ...}`` (the check's finding)."""
    try:
        return {"ok": True, **student_step(payload)}
    except Exception as err:  # reported to the caller as the check's finding, with its type
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def main() -> int:
    result = checked_step(json.loads(sys.stdin.read()))
    print("STEP_CHECK " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
