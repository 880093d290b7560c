"""Resumable training state of one data-parallel rank, in safetensors (never pickle).

DeepSpeed's own ``save_checkpoint`` writes ``torch.save`` pickles, which this
project does not put on disk. Each rank instead writes ``rank-R.safetensors``:

- ``module/*``: the model weights (identical on every rank for ZeRO stages 0-2);
- ``ema/*``: the EMA weights used for evaluation;
- ``optim/*``: the optimizer state. Under ZeRO 1/2 that is this rank's fp32
  master partition and its base-optimizer moments; under stage 0 the plain
  optimizer state. Non-tensor parts (steps, hyper-parameters) travel as JSON
  in the file's metadata, with a skeleton that puts every tensor back.

The engine is duck-typed (``engine.module``, ``engine.optimizer``), so this file
imports no DeepSpeed. Optimizer state restores only into the same world size
and ZeRO stage; anything else raises ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from teachers.checkpoint import CheckpointError, replaced_atomically

__all__ = ["FORMAT", "rank_file", "save_rank_state", "load_rank_state", "read_rank_meta", "pack_tree",
           "unpack_tree"]

FORMAT = "bezier-distill/rank-state"
VERSION = 1


def rank_file(directory: str | Path, rank: int) -> Path:
    return Path(directory) / f"rank-{rank}.safetensors"


def pack_tree(obj: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    """A JSON skeleton of nested dicts/lists/scalars; each tensor is moved into ``tensors`` under its path."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"t": prefix}
    if isinstance(obj, dict):
        return {"d": [[k, pack_tree(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"l": [pack_tree(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    raise TypeError(f"{prefix}: cannot store a {type(obj).__name__} without pickle")


def unpack_tree(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of ``pack_tree``."""
    if "t" in skeleton:
        return tensors[skeleton["t"]]
    if "d" in skeleton:
        return {k: unpack_tree(v, tensors) for k, v in skeleton["d"]}
    if "l" in skeleton:
        return [unpack_tree(v, tensors) for v in skeleton["l"]]
    return skeleton["v"]


def _is_zero(optimizer) -> bool:
    return hasattr(optimizer, "single_partition_of_fp32_groups")


def _optimizer_state(optimizer) -> dict:
    if _is_zero(optimizer):
        return {"fp32_partitions": list(optimizer.single_partition_of_fp32_groups),
                "base": optimizer.optimizer.state_dict()}
    return {"plain": optimizer.state_dict()}


def save_rank_state(directory: str | Path, engine, ema: nn.Module, rank: int, world_size: int, zero_stage: int,
                    extra: dict, data: dict[str, Tensor] | None = None) -> Path:
    """Write this rank's file (atomically: a ``.tmp`` renamed into place); ``extra`` is JSON (step, counters),
    ``data`` more tensors to keep (stored under ``data/``, e.g. the replay pool)."""
    tensors: dict[str, Tensor] = {f"data/{k}": v.detach().cpu().contiguous() for k, v in (data or {}).items()}
    for name, t in engine.module.state_dict().items():
        tensors[f"module/{name}"] = t.detach().cpu().contiguous()
    for name, t in ema.state_dict().items():
        tensors[f"ema/{name}"] = t.detach().cpu().contiguous()
    skeleton = pack_tree(_optimizer_state(engine.optimizer), tensors, "optim")
    meta = {"format": FORMAT, "version": VERSION, "rank": rank, "world_size": world_size,
            "zero_stage": zero_stage, "optimizer": skeleton, "extra": extra}
    path = rank_file(directory, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        save_file(tensors, str(tmp), metadata={"bezier_distill": json.dumps(meta)})
    return path


def read_rank_meta(path: str | Path) -> dict:
    """The JSON metadata of a rank file; ``CheckpointError`` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (every rank writes rank-R.safetensors at each checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("bezier_distill")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({err})") from None
    if raw is None:
        raise CheckpointError(f"{path}: no bezier_distill metadata (not a rank-state file)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({err})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                              f"this reader knows {FORMAT!r} version {VERSION}")
    return meta


def _load_module(target: nn.Module, tensors: dict[str, Tensor], prefix: str, path: Path) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {prefix.rstrip('/')} weights do not fit the network ({err})") from None


def load_rank_state(directory: str | Path, engine, ema: nn.Module, rank: int, world_size: int,
                    zero_stage: int) -> tuple[dict, dict[str, Tensor]]:
    """Restore weights, EMA and optimizer state written by ``save_rank_state``; returns ``extra`` and ``data``."""
    path = rank_file(directory, rank)
    meta = read_rank_meta(path)
    if (meta["world_size"], meta["zero_stage"]) != (world_size, zero_stage):
        raise CheckpointError(f"{path}: written by {meta['world_size']} ranks at ZeRO stage {meta['zero_stage']}; "
                              f"this run has {world_size} at stage {zero_stage} (optimizer partitions differ). "
                              "Resume with the same student.workers and student.zero_stage")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({err})") from None
    device = next(engine.module.parameters()).device
    _load_module(engine.module, tensors, "module/", path)
    _load_module(ema, tensors, "ema/", path)
    try:
        state = unpack_tree(meta["optimizer"], tensors)
    except KeyError as err:
        raise CheckpointError(f"{path}: optimizer tensor {err} is missing") from None
    opt = engine.optimizer
    if _is_zero(opt) != ("fp32_partitions" in state):
        raise CheckpointError(f"{path}: optimizer state is for a different ZeRO setting")
    if _is_zero(opt):
        for dst, src in zip(opt.single_partition_of_fp32_groups, state["fp32_partitions"]):
            if dst.shape != src.shape:
                raise CheckpointError(f"{path}: fp32 partition {list(src.shape)} vs this rank's {list(dst.shape)}")
            dst.data.copy_(src.to(device))
        opt.optimizer.load_state_dict(state["base"])
    else:
        opt.load_state_dict(state["plain"])
    return meta["extra"], {k[len("data/"):]: v for k, v in tensors.items() if k.startswith("data/")}
