"""How a pretrained (diffusers) model's time input and output read as this project's velocity ``v(x, t)``.

This project's time runs ``t in [0, 1]`` with ``x_0`` noise and ``x_1`` data (``teachers.rectified_flow``).
A pretrained model was trained in its own convention; a *convention* names one and converts it. The
registry ``CONVENTIONS`` (name -> a ``PretrainedVelocity`` class) is the one list of accepted names: the
run configuration (``teachers[].convention``) and the CLI (``--convention``) validate against it.

``flow_match``: diffusers' flow matching (``FlowMatchEulerDiscreteScheduler``, SD3, Flux): a noise level
``sigma = 1 - t`` runs from 1 (noise) to 0 (data), ``x_sigma = sigma * noise + (1 - sigma) * data``, the
model is called with ``timestep = sigma * num_train_timesteps`` and predicts ``dx/dsigma = noise - data``:

    v(x, t) = dx/dt = -model(x, timestep = (1 - t) * num_train_timesteps)

``num_train_timesteps`` comes from a ``scheduler_config.json`` beside or above the model
(``MODEL/``, ``MODEL/scheduler/``, ``MODEL/../scheduler/``), else 1000. The scheduler's ``shift`` only
moves where a sampler puts its steps, not this map, so any shift reads the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from teachers.checkpoint_error import CheckpointError, read_json_object
from teachers.registry import Registry

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "PretrainedVelocity", "FlowMatchVelocity", "scheduler_config"]

DEFAULT_CONVENTION = "flow_match"


def scheduler_config(model_dir: str | Path) -> tuple[Path | None, dict[str, Any]]:
    """The first ``scheduler_config.json`` beside or above a model directory, and its content (``{}`` if none)."""
    model_dir = Path(model_dir)
    for path in (
        model_dir / "scheduler_config.json",
        model_dir / "scheduler" / "scheduler_config.json",
        model_dir.parent / "scheduler" / "scheduler_config.json",
    ):
        if path.is_file():
            return path, read_json_object(path)
    return None, {}


class PretrainedVelocity(nn.Module):
    """The interface of a convention: wraps a pretrained model as ``v(x, t)``.

    ``check`` refuses, from the model's ``config.json`` alone, a model the convention cannot describe;
    ``from_directory`` builds the wrapper, reading whatever else the convention needs beside the model, and
    ``settings`` gives that back (the wrapper is ``cls(model, **settings)``: a student saved with it).
    ``forward(x (B, *D), t (B,)) -> (B, *D)`` is the velocity in this project's time; a student of the
    teacher's architecture takes a second time, ``forward(x, s, t)`` (``f(x, s, t)`` of a flow map), and reads
    both times as the teacher reads its one.
    """

    name: ClassVar[str]
    model: nn.Module

    @classmethod
    def check(cls, model_config: dict[str, Any], config_path: Path, data_shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    @classmethod
    def from_directory(cls, model: nn.Module, model_dir: Path) -> "PretrainedVelocity":
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError


class FlowMatchVelocity(PretrainedVelocity):
    """``v(x, t) = -model(x, (1 - t) * num_train_timesteps)`` (the ``flow_match`` convention).

    ``x``: ``(B, C, H, W)``; ``t``: ``(B,)`` in ``[0, 1]``; returns ``(B, C, H, W)``. With two times ``(s, t)``
    (a flow-map student of the teacher's architecture) the second goes in as the model's ``class_labels``,
    mapped the same way: ``f(x, s, t) = -model(x, (1 - s) T, class_labels=(1 - t) T)``.
    """

    name: ClassVar[str] = "flow_match"
    scheduler_classes: ClassVar[tuple[str, ...]] = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")

    def __init__(self, model: nn.Module, num_train_timesteps: int = 1000):
        super().__init__()
        self.model = model
        self.num_train_timesteps = num_train_timesteps

    @classmethod
    def check(cls, model_config: dict[str, Any], config_path: Path, data_shape: tuple[int, ...]) -> None:
        """Refuse a model whose input or output is not one data sample (e.g. a learned-variance output)."""
        c = data_shape[0] if len(data_shape) == 3 else None
        out_channels = model_config.get("out_channels", model_config.get("in_channels"))
        if c is None or model_config.get("in_channels") != c or out_channels != c:
            raise CheckpointError(
                f"{config_path}: in_channels {model_config.get('in_channels')}, out_channels {out_channels}; the "
                f"{cls.name} convention needs a velocity of the data's shape {list(data_shape)} (in = out = {c})"
            )

    @classmethod
    def from_directory(cls, model: nn.Module, model_dir: Path) -> "FlowMatchVelocity":
        path, sched = scheduler_config(model_dir)
        name = sched.get("_class_name")
        if name is not None and name not in cls.scheduler_classes:
            raise CheckpointError(
                f"{path}: scheduler {name!r} is not a flow-matching scheduler "
                f"({', '.join(cls.scheduler_classes)}); the {cls.name} convention would misread "
                "this model"
            )
        return cls(model, int(sched.get("num_train_timesteps", 1000)))

    def settings(self) -> dict[str, Any]:
        return {"num_train_timesteps": self.num_train_timesteps}

    def forward(self, x: torch.Tensor, *times: torch.Tensor) -> torch.Tensor:
        steps = [(1.0 - t) * self.num_train_timesteps for t in times]
        if len(steps) == 1:
            out = self.model(x, steps[0])
        elif len(steps) == 2:
            out = self.model(x, steps[0], class_labels=steps[1])
        else:
            raise ValueError(f"expected 1 or 2 time inputs, got {len(steps)}")
        out = out.sample if hasattr(out, "sample") else out[0]
        return -out


CONVENTIONS: Registry[type[PretrainedVelocity]] = Registry("convention", {FlowMatchVelocity.name: FlowMatchVelocity})
