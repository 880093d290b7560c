"""Rank-state files: the pickle-free tree format, and errors that name the file."""

import json

import pytest
import torch
from safetensors.torch import save_file

from student.ds_config import deepspeed_config
from teachers.schedule import lr_at
from student.engine_state import pack_tree, rank_file, read_rank_meta, unpack_tree
from student.train_loop import id_runs, merge_runs
from teachers.checkpoint import CheckpointError
from student.section import StudentSettings
from teachers.device_plan import resolve_precision


def test_tree_round_trip_keeps_int_keys_and_tensors():
    state = {
        "state": {0: {"step": 3, "exp_avg": torch.arange(4.0)}, 1: {"step": 3, "exp_avg": torch.ones(2)}},
        "param_groups": [{"lr": 1e-3, "betas": [0.9, 0.999], "params": [0, 1], "amsgrad": False, "x": None}],
    }
    tensors = {}
    skeleton = json.loads(json.dumps(pack_tree(state, tensors, "optim")))
    back = unpack_tree(skeleton, tensors)
    assert list(back["state"]) == [0, 1] and torch.equal(back["state"][0]["exp_avg"], torch.arange(4.0))
    assert back["param_groups"][0]["betas"] == [0.9, 0.999] and back["param_groups"][0]["x"] is None
    with pytest.raises(TypeError, match="optim.bad: cannot store a object"):
        pack_tree({"bad": object()}, {}, "optim")


def test_bad_rank_files_are_named(tmp_path):
    path = rank_file(tmp_path, 1)
    with pytest.raises(CheckpointError, match="rank-1.safetensors: missing"):
        read_rank_meta(path)
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="rank-1.safetensors: unreadable"):
        read_rank_meta(path)
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="no bezier_distill metadata"):
        read_rank_meta(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"bezier_distill": json.dumps({"format": "other"})})
    with pytest.raises(CheckpointError, match="this reader knows"):
        read_rank_meta(path)


def test_deepspeed_config_and_precision():
    sc = StudentSettings(batch_size=32, zero_stage=2, grad_clip=0.5)
    ds = deepspeed_config(sc, world_size=4, precision="fp32")
    assert ds["train_batch_size"] == 128 and ds["zero_optimization"]["stage"] == 2
    assert ds["gradient_clipping"] == 0.5 and "bf16" not in ds
    assert "optimizer" not in ds  # a torch optimizer is handed over: DeepSpeed builds no fused Adam
    assert deepspeed_config(sc, 1, "bf16")["bf16"] == {"enabled": True}
    assert resolve_precision("bf16", "student.precision", on_gpu=False) == "bf16"  # honoured on the CPU
    assert resolve_precision("auto", "precision", on_gpu=False) == "fp32"
    assert resolve_precision("auto", "precision", on_gpu=True, bf16_supported=True) == "bf16"
    with pytest.raises(ValueError, match="allowed here"):
        resolve_precision("bf16", "student.precision", on_gpu=True, bf16_supported=False)
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1) and lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)


def test_id_runs_merge_and_show_overlaps():
    assert id_runs([5, 3, 4, 9]) == [[3, 3], [9, 1]]
    assert merge_runs([[10, 5], [0, 10], [20, 1]]) == [[0, 15], [20, 1]]
    assert merge_runs([[0, 5], [3, 2]]) == [[0, 5], [3, 2]]  # an overlap stays visible
