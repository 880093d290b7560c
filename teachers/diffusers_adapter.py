"""Teachers from ``diffusers``: models saved with ``save_pretrained`` (``config.json`` + safetensors weights).

How the model's time input and output read as this project's ``v(x, t)`` is a named *convention*
(``teachers.conventions``; the default ``flow_match`` is diffusers' flow matching). Loading checks the
model's shape against the data and the convention before it reads any weights.

Weights load from safetensors (``use_safetensors=True``): no pickle. ``diffusers`` is an optional
extra (``pip install -e '.[diffusers]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from teachers.checkpoint import CheckpointError
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION

__all__ = [
    "is_diffusers_dir",
    "diffusers_config",
    "diffusers_data_shape",
    "check_diffusers_teacher",
    "load_diffusers_teacher",
]

CONFIG_FILE = "config.json"


def is_diffusers_dir(path: str | Path) -> bool:
    """A ``save_pretrained`` model directory: ``config.json`` naming a diffusers class."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        doc = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "_class_name" in doc


def diffusers_config(path: str | Path) -> dict[str, Any]:
    """The model's ``config.json`` (``CheckpointError`` naming the file when it is not a diffusers config)."""
    cfg = Path(path) / CONFIG_FILE
    if not is_diffusers_dir(path):
        raise CheckpointError(f"{cfg}: missing or not a diffusers model config (no _class_name)")
    return json.loads(cfg.read_text())


def diffusers_data_shape(path: str | Path) -> tuple[int, ...]:
    """``(C, H, W)`` from the model's config (``in_channels``, ``sample_size``)."""
    cfg = diffusers_config(path)
    size = cfg.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size or (None, None))
    if cfg.get("in_channels") is None or h is None:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: needs in_channels and sample_size to know the data shape")
    return (int(cfg["in_channels"]), int(h), int(w))


def check_diffusers_teacher(
    path: str | Path, data_shape: tuple[int, ...], convention: str = DEFAULT_CONVENTION
) -> None:
    """Refuse (``CheckpointError`` naming ``config.json``) a model that does not fit the data or the convention."""
    config_path = Path(path) / CONFIG_FILE
    shape = diffusers_data_shape(path)
    if shape != tuple(data_shape):
        raise CheckpointError(
            f"{config_path}: data shape {list(shape)} does not match the data {list(data_shape)} "
            "(the model's in_channels and sample_size)"
        )
    CONVENTIONS[convention].check(diffusers_config(path), config_path, tuple(data_shape))


def load_diffusers_teacher(
    path: str | Path, data_shape: tuple[int, ...], convention: str = DEFAULT_CONVENTION
) -> nn.Module:
    """``v(x, t)`` from the diffusers model class named in ``config.json`` (e.g. ``UNet2DModel``), read in
    ``convention``; the weights come from safetensors."""
    try:  # deferred: diffusers is an optional extra and slow to import
        import diffusers  # optional and heavy: only diffusers teachers need it
    except ImportError:
        raise CheckpointError(f"{path}: a diffusers model; install the extra: pip install -e '.[diffusers]'") from None
    path = Path(path)
    check_diffusers_teacher(path, data_shape, convention)
    name = diffusers_config(path)["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise CheckpointError(f"{path / CONFIG_FILE}: diffusers has no model class {name!r}")
    try:
        model = cls.from_pretrained(str(path), use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise CheckpointError(f"{path}: cannot load {name} from safetensors ({err})") from None
    return CONVENTIONS[convention].from_directory(model.eval(), path).eval()
