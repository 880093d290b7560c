"""Checkpoints round-trip; every kind of damage gives an error naming the file and the problem."""

import json
import shutil

import pytest
import torch

from teachers.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    checkpoint_complete,
    copy_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from teachers.nets import build_network


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_network("unet", (1, 8, 8), channels=8, time_embed_dim=16)
    meta = CheckpointMeta(arch="unet", arch_kwargs={"channels": 8, "time_embed_dim": 16}, data_shape=[1, 8, 8])
    save_checkpoint(tmp_path / "c", model, meta)
    return tmp_path / "c", model


def test_round_trip_is_exact(ckpt):
    path, model = ckpt
    loaded, meta = load_checkpoint(path)
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert torch.equal(loaded(x, t), model.eval()(x, t))
    assert meta.arch == "unet" and meta.data_shape == [1, 8, 8]


def test_a_checkpoint_is_complete_only_with_both_files(ckpt, tmp_path):
    """The one answer to "is this checkpoint there": a folder without its last file (``model.json``) or
    without its weights is not, nor is a folder that does not exist."""
    path, _ = ckpt
    assert checkpoint_complete(path)
    assert not checkpoint_complete(tmp_path / "nope")
    (path / "model.json").rename(path / "kept.json")
    assert not checkpoint_complete(path)
    (path / "kept.json").rename(path / "model.json")
    (path / "model.safetensors").unlink()
    assert not checkpoint_complete(path)


def test_a_copy_replaces_an_older_checkpoint_and_is_incomplete_until_its_description_lands(ckpt, tmp_path):
    path, model = ckpt
    torch.manual_seed(1)
    older = build_network("unet", (1, 8, 8), channels=8, time_embed_dim=16)
    meta = CheckpointMeta(arch="unet", arch_kwargs={"channels": 8, "time_embed_dim": 16}, data_shape=[1, 8, 8])
    save_checkpoint(tmp_path / "dst", older, meta)
    copy_checkpoint(path, tmp_path / "dst")
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert torch.equal(load_checkpoint(tmp_path / "dst")[0](x, t), model.eval()(x, t))
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["model.json", "model.safetensors"]
    (path / "model.safetensors").unlink()  # a copy that fails before the weights are in
    with pytest.raises(FileNotFoundError):
        copy_checkpoint(path, tmp_path / "dst")
    assert not checkpoint_complete(tmp_path / "dst")  # the old description no longer vouches for the weights


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize(
    "name,match", [("model.json", "model.json: missing"), ("model.safetensors", "model.safetensors: missing")]
)
def test_missing_file(ckpt, name, match):
    path, _ = ckpt
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_weights(ckpt):
    path, _ = ckpt
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: unreadable, truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_json(ckpt):
    path, _ = ckpt
    (path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model.json: not valid JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "edit,match",
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"format": "other"}, "format is 'other'"),
        ({"arch": "transformer"}, "arch 'transformer' unknown"),
        ({"arch_kwargs": {"channels": 16, "time_embed_dim": 16}}, "shape mismatch"),
        ({"arch": "mlp", "arch_kwargs": {}}, "missing tensors"),
    ],
)
def test_mismatched_description(ckpt, edit, match):
    path, _ = ckpt
    doc = json.loads((path / "model.json").read_text())
    doc.update(edit)
    (path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_missing_key_in_description(ckpt):
    path, _ = ckpt
    doc = json.loads((path / "model.json").read_text())
    del doc["data_shape"]
    (path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"missing keys \['data_shape'\]"):
        load_checkpoint(path)


def test_wrong_data_shape_is_refused(ckpt):
    path, _ = ckpt
    with pytest.raises(CheckpointError, match=r"data_shape \[1, 8, 8\] does not match the data's shape \[2\]"):
        load_checkpoint(path, expect_data_shape=(2,))


def test_weights_from_another_model(ckpt, tmp_path):
    path, _ = ckpt
    other = build_network("mlp", (2,), hidden=16, depth=1, time_embed_dim=8)
    save_checkpoint(
        tmp_path / "o",
        other,
        CheckpointMeta(arch="mlp", arch_kwargs={"hidden": 16, "depth": 1, "time_embed_dim": 8}, data_shape=[2]),
    )
    shutil.copy(tmp_path / "o" / "model.safetensors", path / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_checkpoint(path)
