"""Network checkpoints: ``DIR/model.safetensors`` (weights) + ``DIR/model.json`` (what they are).

Loading never unpickles: weights come from safetensors, the description from
JSON. Every failure raises ``CheckpointError`` naming the file and the problem.
The same format serves teachers and students (a student of a diffusers teacher's architecture included:
``arch: diffusers``, ``teachers.diffusers_adapter``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from guide_store.atomic import copy_atomically, replaced_atomically, write_json_atomically
from teachers.checkpoint_error import CheckpointError, read_json_object
from teachers.diffusers_adapter import DIFFUSERS_ARCH, build_diffusers_network
from teachers.nets import ARCHITECTURES, build_network

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "save_checkpoint",
    "checkpoint_complete",
    "copy_checkpoint",
    "load_checkpoint",
    "read_meta",
    "read_json_object",
    "WEIGHTS_FILE",
    "META_FILE",
    "FORMAT",
    "FORMAT_VERSION",
]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT = "bezier-distill/network"
FORMAT_VERSION = 1


@dataclass
class CheckpointMeta:
    """What a weights file is: enough to rebuild the network and to know how it was made."""

    arch: str
    arch_kwargs: dict[str, Any]
    data_shape: list[int]
    time_inputs: int = 1
    role: str = "teacher"
    data_name: str = ""
    rectification: int = 1
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The network, freshly initialised: a ``teachers.nets`` family, or a diffusers model class
        (``arch: diffusers``, a student of a diffusers teacher's architecture)."""
        if self.arch == DIFFUSERS_ARCH:
            return build_diffusers_network(tuple(self.data_shape), self.time_inputs, **self.arch_kwargs)
        return build_network(self.arch, tuple(self.data_shape), time_inputs=self.time_inputs, **self.arch_kwargs)


def save_checkpoint(directory: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights and description; the JSON is written last so a partial save is detectable."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with replaced_atomically(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(meta)}
    write_json_atomically(directory / META_FILE, doc, sort_keys=True)  # last: its presence means saved
    return directory


def checkpoint_complete(directory: str | Path) -> bool:
    """Whether ``directory`` holds a whole checkpoint: its weights and its description, written last by
    ``save_checkpoint`` (a save cut short leaves no ``model.json``). Whether the files load is
    ``load_checkpoint``'s question."""
    directory = Path(directory)
    return (directory / WEIGHTS_FILE).is_file() and (directory / META_FILE).is_file()


def copy_checkpoint(source: str | Path, directory: str | Path) -> Path:
    """Copy the checkpoint in ``source`` into ``directory`` the way ``save_checkpoint`` writes one: an old
    description there removed first, then the weights, the description last, each file renamed into place
    whole; ``checkpoint_complete`` never holds for new weights under an old description."""
    source, directory = Path(source), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)
    copy_atomically(source / WEIGHTS_FILE, directory / WEIGHTS_FILE)
    copy_atomically(source / META_FILE, directory / META_FILE)
    return directory


def read_meta(directory: str | Path) -> CheckpointMeta:
    """Read and check ``model.json`` without touching the weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    path = directory / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint needs {META_FILE} and {WEIGHTS_FILE})")
    doc = read_json_object(path)
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {doc.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    fields = set(CheckpointMeta.__dataclass_fields__)
    required = {"arch", "arch_kwargs", "data_shape"}
    missing = sorted(required - doc.keys())
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if doc["arch"] not in ARCHITECTURES and doc["arch"] != DIFFUSERS_ARCH:
        known = [*sorted(ARCHITECTURES), DIFFUSERS_ARCH]
        raise CheckpointError(f"{path}: arch {doc['arch']!r} unknown; known: {known}")
    return CheckpointMeta(**{k: v for k, v in doc.items() if k in fields})


def load_checkpoint(
    directory: str | Path, expect_data_shape: tuple[int, ...] | None = None, map_location: str = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the network from ``model.json`` and load ``model.safetensors`` strictly."""
    directory = Path(directory)
    meta = read_meta(directory)
    if expect_data_shape is not None and tuple(meta.data_shape) != tuple(expect_data_shape):
        raise CheckpointError(
            f"{directory / META_FILE}: data_shape {meta.data_shape} does not match "
            f"the data's shape {list(expect_data_shape)}"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: unreadable, truncated or corrupt ({err})") from None
    try:
        model = meta.build()
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{directory / META_FILE}: cannot build {meta.arch} from {meta.arch_kwargs} ({err})"
        ) from None
    _check_state(weights, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def _check_state(path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [
        f"{k}: file {list(found[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(expected.keys() & found.keys())
        if found[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(f"{path}: does not match the architecture in {META_FILE}: " + "; ".join(problems))
