"""Teachers from ``diffusers``: rectified-flow (flow-matching) models saved with ``save_pretrained``.

diffusers' flow-matching convention (``FlowMatchEulerDiscreteScheduler``): a noise level ``sigma``
runs from 1 (noise) to 0 (data), ``x_sigma = sigma * noise + (1 - sigma) * data``, the timestep passed
to the model is ``sigma * num_train_timesteps`` and the model predicts ``dx/dsigma = noise - data``.
This project's time is ``t = 1 - sigma`` (noise at 0, data at 1), so its velocity is

    v(x, t) = dx/dt = -model(x, timestep = (1 - t) * num_train_timesteps)

Weights load from safetensors (``use_safetensors=True``): no pickle. ``diffusers`` is an optional
extra (``pip install -e '.[diffusers]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from teachers.checkpoint import CheckpointError

__all__ = ["DiffusersVelocity", "is_diffusers_dir", "diffusers_data_shape", "load_diffusers_teacher"]


def is_diffusers_dir(path: str | Path) -> bool:
    """A ``save_pretrained`` model directory: ``config.json`` naming a diffusers class."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "_class_name" in json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False


def diffusers_data_shape(path: str | Path) -> tuple[int, ...]:
    """``(C, H, W)`` from the model's config (``in_channels``, ``sample_size``)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    size = cfg.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size or (None, None))
    if cfg.get("in_channels") is None or h is None:
        raise CheckpointError(f"{Path(path) / 'config.json'}: needs in_channels and sample_size to know the data shape")
    return (int(cfg["in_channels"]), int(h), int(w))


class DiffusersVelocity(nn.Module):
    """Wraps a diffusers model as ``v(x, t)`` in this project's convention (see the module docstring)."""

    def __init__(self, model: nn.Module, num_train_timesteps: int = 1000):
        super().__init__()
        self.model = model
        self.num_train_timesteps = num_train_timesteps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        timestep = (1.0 - t) * self.num_train_timesteps
        out = self.model(x, timestep)
        out = out.sample if hasattr(out, "sample") else out[0]
        return -out


def load_diffusers_teacher(path: str | Path, num_train_timesteps: int = 1000) -> DiffusersVelocity:
    """Load a diffusers model class named in ``config.json`` (e.g. ``UNet2DModel``) from safetensors."""
    try:
        import diffusers
    except ImportError:
        raise CheckpointError(f"{path}: a diffusers model; install the extra: pip install -e '.[diffusers]'") from None
    path = Path(path)
    name = json.loads((path / "config.json").read_text())["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise CheckpointError(f"{path / 'config.json'}: diffusers has no model class {name!r}")
    try:
        model = cls.from_pretrained(str(path), use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as err:
        raise CheckpointError(f"{path}: cannot load {name} from safetensors ({err})") from None
    return DiffusersVelocity(model.eval(), num_train_timesteps).eval()
