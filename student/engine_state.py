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
imports no DeepSpeed. Optimizer state restores into the same ZeRO stage (anything
else raises ``CheckpointError`` naming the file) and, for an elastic pool, into
another world size (``reshard``): at stage 0 every rank holds the same full state;
at stage 1 the fp32 partitions (and the Adam moments laid out like them) of all
the old ranks are joined in rank order into the group's flat buffer, whose layout
does not depend on the world size but for the zeros padding its end, cut or
padded to the new buffer's length and split again the way DeepSpeed splits it.
ZeRO 2 is refused at another world size. Which old ranks' records (replay pool,
unacknowledged deliveries, trained ids) a new rank takes over is ``shares``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
import torch
from torch import Tensor, nn

from guide_store.atomic import replaced_atomically
from teachers.checkpoint import CheckpointError

__all__ = [
    "FORMAT",
    "rank_file",
    "save_rank_state",
    "load_rank_state",
    "read_rank_meta",
    "read_rank_share",
    "checkpoint_world",
    "shares",
    "pack_tree",
    "unpack_tree",
    "RESHARD_STAGES",
]

RESHARD_STAGES = (0, 1)  # ZeRO stages whose optimizer state resumes at another world size

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
        return {
            "fp32_partitions": list(optimizer.single_partition_of_fp32_groups),
            "base": optimizer.optimizer.state_dict(),
        }
    return {"plain": optimizer.state_dict()}


def save_rank_state(
    directory: str | Path,
    engine,
    ema: nn.Module,
    rank: int,
    world_size: int,
    zero_stage: int,
    extra: dict,
    data: dict[str, Tensor] | None = None,
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write this rank's file (atomically: a ``.tmp`` renamed into place); ``extra`` is JSON (step, counters),
    ``data`` more tensors to keep (stored under ``data/``, e.g. the replay pool). ``before_rename`` is called
    with the ``.tmp`` written and not yet in place (a test-only fault kills the rank there)."""
    tensors: dict[str, Tensor] = {f"data/{k}": v.detach().cpu().contiguous() for k, v in (data or {}).items()}
    for name, t in engine.module.state_dict().items():
        tensors[f"module/{name}"] = t.detach().cpu().contiguous()
    for name, t in ema.state_dict().items():
        tensors[f"ema/{name}"] = t.detach().cpu().contiguous()
    skeleton = pack_tree(_optimizer_state(engine.optimizer), tensors, "optim")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "rank": rank,
        "world_size": world_size,
        "zero_stage": zero_stage,
        "optimizer": skeleton,
        "extra": extra,
    }
    path = rank_file(directory, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        save_file(tensors, str(tmp), metadata={"bezier_distill": json.dumps(meta)})
        if before_rename is not None:
            before_rename()
    return path


def _optimizer_file_state(directory: str | Path, rank: int) -> dict:
    """The optimizer state in old rank ``rank``'s file (for resharding)."""
    path = rank_file(directory, rank)
    meta = read_rank_meta(path)
    try:
        return unpack_tree(meta["optimizer"], load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: optimizer state unreadable ({err})") from None


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
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this reader knows {FORMAT!r} version {VERSION}"
        )
    return meta


def checkpoint_world(directory: str | Path) -> int:
    """The world size the checkpoint in ``directory`` was written by (from rank 0's file)."""
    return int(read_rank_meta(rank_file(directory, 0))["world_size"])


def shares(rank: int, world: int, old_world: int) -> list[int]:
    """The old ranks whose records (replay pool, fresh remainder, unacknowledged deliveries, trained ids and
    their store consumer) new rank ``rank`` of ``world`` takes over from a checkpoint of ``old_world`` ranks:
    every old rank ``j`` with ``j % world == rank`` (itself alone when the world did not shrink)."""
    return [j for j in range(old_world) if j % world == rank]


def read_rank_share(directory: str | Path, rank: int) -> tuple[dict, dict[str, Tensor]]:
    """``extra`` and the ``data/`` tensors of old rank ``rank``'s file (no weights, no optimizer)."""
    path = rank_file(directory, rank)
    meta = read_rank_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({err})") from None
    return meta["extra"], {k[len("data/") :]: v for k, v in tensors.items() if k.startswith("data/")}


def _reshard(opt, group: int, parts: list[Tensor], rank: int) -> Tensor:
    """This rank's partition of group ``group`` from the old ranks' partitions ``parts`` (module docstring)."""
    flat = torch.cat([p.reshape(-1) for p in parts])
    length = opt.bit16_groups_flat[group].numel()
    if flat.numel() < length:
        flat = torch.cat([flat, flat.new_zeros(length - flat.numel())])
    return opt.get_data_parallel_partitions(flat[:length], group)[rank].clone()


def _load_resharded(opt, states: list[dict], rank: int, device) -> None:
    """ZeRO 1 optimizer state from every old rank's ``states`` (rank order) into this rank's partitions: the
    fp32 master partitions and each Adam tensor laid out like them; scalars (the step) from old rank 0."""
    base = states[0]["base"]
    for i, dst in enumerate(opt.single_partition_of_fp32_groups):
        old = [s["fp32_partitions"][i] for s in states]
        dst.data.copy_(_reshard(opt, i, old, rank).to(device))
        for key, value in list(base["state"].get(i, {}).items()):
            if isinstance(value, Tensor) and value.shape == old[0].shape:
                base["state"][i][key] = _reshard(opt, i, [s["base"]["state"][i][key] for s in states], rank)
    opt.optimizer.load_state_dict(base)


def _load_module(target: nn.Module, tensors: dict[str, Tensor], prefix: str, path: Path) -> None:
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {prefix.rstrip('/')} weights do not fit the network ({err})") from None


def load_rank_state(
    directory: str | Path, engine, ema: nn.Module, rank: int, world_size: int, zero_stage: int
) -> tuple[dict, dict[str, Tensor]]:
    """Restore weights, EMA and optimizer state written by ``save_rank_state``; returns ``extra`` and ``data``
    of the file read: this rank's, or rank 0's for a rank the old world did not have (at another world size
    the caller takes the records from ``shares``)."""
    old_world = checkpoint_world(directory)
    path = rank_file(directory, rank if rank < old_world else 0)
    meta = read_rank_meta(path)
    if meta["zero_stage"] != zero_stage:
        raise CheckpointError(
            f"{path}: written at ZeRO stage {meta['zero_stage']}; this run has stage {zero_stage} "
            "(optimizer partitions differ). Resume with the same student.zero_stage"
        )
    if old_world != world_size and zero_stage not in RESHARD_STAGES:
        raise CheckpointError(
            f"{path}: written by {old_world} ranks at ZeRO stage {zero_stage}; this run has "
            f"{world_size}, and ZeRO {zero_stage} state does not reshard (stages "
            f"{', '.join(map(str, RESHARD_STAGES))} do). Resume with student.workers: {old_world}"
        )
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
    if _is_zero(opt) and old_world != world_size:
        primary = rank if rank < old_world else 0  # the file read above: its state is not read again
        _load_resharded(
            opt,
            [state if j == primary else _optimizer_file_state(directory, j) for j in range(old_world)],
            rank,
            device,
        )
    elif _is_zero(opt):
        for dst, src in zip(opt.single_partition_of_fp32_groups, state["fp32_partitions"]):
            if dst.shape != src.shape:
                raise CheckpointError(f"{path}: fp32 partition {list(src.shape)} vs this rank's {list(dst.shape)}")
            dst.data.copy_(src.to(device))
        opt.optimizer.load_state_dict(state["base"])
    else:
        opt.load_state_dict(state["plain"])
    return meta["extra"], {k[len("data/") :]: v for k, v in tensors.items() if k.startswith("data/")}
