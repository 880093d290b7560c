"""Teachers from ``diffusers``: models saved with ``save_pretrained`` (``config.json`` + safetensors weights).

How the model's time input and output read as this project's ``v(x, t)`` is a named *convention*
(``teachers.conventions``; the default ``flow_match`` is diffusers' flow matching). Loading checks the
model's shape against the data and the convention before it reads any weights.

A student of a diffusers teacher's own architecture is saved as this project's checkpoint (``model.json`` +
``model.safetensors``) with ``arch: diffusers``: its ``arch_kwargs`` (``diffusers_arch_kwargs``) name the model
class, its config and the convention, from which ``build_diffusers_network`` rebuilds it for the weights.

Weights load from safetensors (``use_safetensors=True``): no pickle. ``diffusers`` is an optional
extra (``pip install -e '.[diffusers]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from teachers.checkpoint_error import CheckpointError
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION, PretrainedVelocity

__all__ = [
    "is_diffusers_dir",
    "diffusers_config",
    "diffusers_data_shape",
    "check_diffusers_teacher",
    "load_diffusers_teacher",
    "DIFFUSERS_ARCH",
    "build_diffusers_network",
    "diffusers_arch_kwargs",
]

DIFFUSERS_ARCH = "diffusers"  # a checkpoint's ``arch`` for a network of a diffusers model class

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
    shape = _config_shape(diffusers_config(path))
    if shape is None:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: needs in_channels and sample_size to know the data shape")
    return shape


def _config_shape(cfg: dict[str, Any]) -> tuple[int, ...] | None:
    size = cfg.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size or (None, None))
    if cfg.get("in_channels") is None or h is None:
        return None
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
    path = Path(path)
    check_diffusers_teacher(path, data_shape, convention)
    name = diffusers_config(path)["_class_name"]
    cls = _model_class(name, path / CONFIG_FILE)
    try:
        model = cls.from_pretrained(str(path), use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise CheckpointError(f"{path}: cannot load {name} from safetensors ({err})") from None
    return CONVENTIONS[convention].from_directory(model.eval(), path).eval()


def _model_class(name: str, where: Path | str) -> Any:
    """The diffusers model class ``name`` (``CheckpointError`` naming ``where`` when there is none)."""
    try:  # deferred: diffusers is an optional extra and slow to import
        import diffusers  # optional and heavy: only diffusers models need it
    except ImportError:
        raise CheckpointError(f"{where}: a diffusers model; install the extra: pip install -e '.[diffusers]'") from None
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise CheckpointError(f"{where}: diffusers has no model class {name!r}")
    return cls


def diffusers_arch_kwargs(net: PretrainedVelocity) -> dict[str, Any]:
    """What rebuilds ``net`` (``build_diffusers_network``): its model's class and config (JSON), the convention
    and the convention's settings."""
    model: Any = net.model  # a diffusers ModelMixin: its ``config`` is a dict of the constructor's arguments
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    return {
        "model_class": type(model).__name__,
        "config": json.loads(json.dumps(config)),
        "convention": net.name,
        "settings": net.settings(),
    }


def build_diffusers_network(
    data_shape: tuple[int, ...],
    time_inputs: int = 1,
    *,
    model_class: str,
    config: dict[str, Any],
    convention: str = DEFAULT_CONVENTION,
    settings: dict[str, Any] | None = None,
) -> PretrainedVelocity:
    """A freshly initialised ``model_class(**config)`` read in ``convention``, for a checkpoint's weights
    (``arch: diffusers``). Two time inputs need a model whose ``class_labels`` take the second time
    (``class_embed_type: timestep``)."""
    where = f"diffusers {model_class} network"
    if time_inputs not in (1, 2) or (time_inputs == 2) != (config.get("class_embed_type") == "timestep"):
        raise CheckpointError(
            f"{where}: time_inputs {time_inputs} with class_embed_type {config.get('class_embed_type')!r}: a second "
            "time input is the model's class_labels (class_embed_type 'timestep'), one time input takes none"
        )
    model = _model_class(model_class, where).from_config(config)
    shape = _config_shape(config)
    if shape != tuple(data_shape):
        raise CheckpointError(f"{where}: in_channels and sample_size give {shape}, not the data's {list(data_shape)}")
    return CONVENTIONS[convention](model, **(settings or {}))
