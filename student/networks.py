"""The student network. Pure torch (no Ray, Redis or DeepSpeed).

A student is one of the teacher families (``teachers.nets``): ``v(x, t)`` for
the ``velocity`` objective, ``f(x, s, t)`` for ``flow_map``. Either can start
from a teacher checkpoint. A student started from a diffusers teacher is of
the teacher's own architecture (``pretrained_student``). Its samplers belong to
its objective (``student.objectives``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from student.objectives import time_inputs
from student.settings import StudentJob
from teachers.checkpoint_error import CheckpointError
from teachers.conventions import PretrainedVelocity
from teachers.diffusers_adapter import DIFFUSERS_ARCH, build_diffusers_network, diffusers_arch_kwargs
from teachers.models import load_velocity
from teachers.nets import build_network
from teachers.settings import NetworkSettings

__all__ = [
    "build_student",
    "init_from_teacher",
    "initial_student",
    "pretrained_student",
    "pretrained_student_problem",
    "student_arch",
    "PRETRAINED_STUDENT_CLASSES",
]

# diffusers model classes a student can copy: their class_labels can carry a flow map's second time
PRETRAINED_STUDENT_CLASSES = ("UNet2DModel",)


def build_student(arch: str, data_shape: tuple[int, ...], arch_kwargs: dict, objective: str) -> nn.Module:
    """A network of the named family with the time inputs the objective needs."""
    return build_network(arch, tuple(data_shape), time_inputs=time_inputs(objective), **arch_kwargs)


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Copy a teacher ``v(x, t)`` into a student of the same family and size.

    A velocity student becomes the teacher. A flow-map student ``f(x, s, t)``
    becomes ``v_teacher(x, s)``: the time embedding's first layer takes the
    teacher's weights on the ``s`` features and zeros on the ``t`` features,
    so at start the one-step map is the teacher's one Euler step.
    """
    src, dst = teacher.state_dict(), student.state_dict()
    out = {}
    for key, value in dst.items():
        if key not in src:
            raise ValueError(f"teacher has no tensor {key!r}: student and teacher must be the same family and size")
        w = src[key]
        if w.shape == value.shape:
            out[key] = w.clone()
        elif key.endswith("embed.mlp.0.weight") and w.shape[0] == value.shape[0] and value.shape[1] % w.shape[1] == 0:
            out[key] = torch.cat([w, torch.zeros(w.shape[0], value.shape[1] - w.shape[1], dtype=w.dtype)], dim=1)
        else:
            raise ValueError(f"tensor {key!r}: teacher {list(w.shape)} vs student {list(value.shape)}")
    student.load_state_dict(out)


def initial_student(job: StudentJob) -> nn.Module:
    """The network a run's student starts from: ``job.network`` from scratch without ``job.init_checkpoint``;
    else the teacher there, loaded as the teacher actors load it (``job.convention`` for a diffusers folder),
    copied into a student of its family (``init_from_teacher``) or, for a diffusers teacher, of its own
    architecture (``pretrained_student``)."""
    objective = job.objective.objective
    if not job.init_checkpoint:
        return build_student(job.network.arch, job.data_shape, job.network.kwargs(), objective)
    teacher = load_velocity(job.init_checkpoint, job.data_shape, job.convention)
    if isinstance(teacher, PretrainedVelocity):
        return pretrained_student(teacher, job.data_shape, time_inputs(objective))
    student = build_student(job.network.arch, job.data_shape, job.network.kwargs(), objective)
    init_from_teacher(student, teacher)
    return student


def student_arch(student: nn.Module, network: NetworkSettings) -> tuple[str, dict[str, Any]]:
    """A student checkpoint's ``arch`` and ``arch_kwargs``: ``network``'s, or the diffusers model's for a
    student of a diffusers teacher's architecture."""
    if isinstance(student, PretrainedVelocity):
        return DIFFUSERS_ARCH, diffusers_arch_kwargs(student)
    return network.arch, network.kwargs()


def pretrained_student_problem(model_class: str, config: dict[str, Any], n_times: int) -> tuple[str, str] | None:
    """Why a diffusers teacher (its class and ``config.json``) cannot start a student with ``n_times`` time
    inputs (``pretrained_student``) and what to set instead, or None; read before any weights are (the
    pre-flight checks ask too)."""
    if model_class not in PRETRAINED_STUDENT_CLASSES:
        copies = ", ".join(PRETRAINED_STUDENT_CLASSES)
        return f"a student copies a diffusers {copies} teacher, not a {model_class}", "set student.init: scratch"
    if n_times == 2 and (config.get("class_embed_type") is not None or config.get("num_class_embeds") is not None):
        return (
            f"the diffusers {model_class} teacher is class-conditional, so its class input cannot carry the flow "
            "map's second time",
            "set student.objective: velocity or student.init: scratch",
        )
    return None


def pretrained_student(teacher: PretrainedVelocity, data_shape: tuple[int, ...], n_times: int) -> PretrainedVelocity:
    """A student of a diffusers teacher's architecture, read in the teacher's convention, that starts as the
    teacher's field.

    One time (``velocity``): a copy of the teacher. Two times (``flow_map``): the model gets
    ``class_embed_type: timestep``, so its ``class_labels`` carry ``t`` through the model's own sinusoidal
    features and a new two-layer embedding added to the ``s`` embedding; that embedding's last layer starts at
    zero, so at start ``f(x, s, t) = v_teacher(x, s)`` for every ``t`` (the one-step map is the teacher's one
    Euler step), as ``init_from_teacher`` starts a native flow map."""
    kwargs = diffusers_arch_kwargs(teacher)
    name, config = kwargs["model_class"], kwargs["config"]
    problem = pretrained_student_problem(name, config, n_times)
    if problem:
        raise CheckpointError("student.init teacher: {}; {}".format(*problem))
    if n_times == 2:
        config["class_embed_type"] = "timestep"
    student = build_diffusers_network(tuple(data_shape), n_times, **kwargs)
    missing, unexpected = student.model.load_state_dict(teacher.model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise CheckpointError(f"diffusers {name} student: teacher tensors {unexpected} unused, {missing} missing")
    if n_times == 2:
        model: Any = student.model  # a UNet2DModel with class_embed_type timestep (build_diffusers_network)
        last = model.class_embedding.linear_2
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    return student
