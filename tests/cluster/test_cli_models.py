"""``eval`` and ``sample`` take any model folder: a native student, a diffusers folder (with ``--config``)."""

import json

import pytest
import torch

from cluster.cli import main
from cluster.config import dump_config, parse_config
from student.networks import build_student
from teachers.checkpoint import CheckpointMeta, save_checkpoint

diffusers = pytest.importorskip("diffusers")


def toy_cfg(tmp_path):
    return parse_config(
        {
            "name": "toy-cli",
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 2000, "n_held_out": 500},
            "teacher": {"network": {"arch": "mlp", "hidden": 16, "depth": 1, "time_embed_dim": 8}},
            "eval": {"n_samples": 200, "slices": 32},
        }
    )


@pytest.fixture
def diffusers_dir(tmp_path):
    torch.manual_seed(0)
    diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).save_pretrained(tmp_path / "unet", safe_serialization=True)
    return tmp_path / "unet"


def test_eval_of_a_diffusers_folder_without_config_says_to_pass_one(diffusers_dir, capsys):
    assert main(["eval", str(diffusers_dir), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{diffusers_dir / 'config.json'}: records no run configuration" in err and "--config CONFIG" in err
    assert "Traceback" not in err


def test_eval_of_a_diffusers_folder_whose_data_does_not_fit_the_config(diffusers_dir, tmp_path, capsys):
    (tmp_path / "toy.yaml").write_text(dump_config(toy_cfg(tmp_path)))
    assert (
        main(["sample", str(diffusers_dir), "--config", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "s.png")])
        == 2
    )
    assert "config.json: data shape [1, 8, 8] does not match the data 'eight_gaussians' [2]" in capsys.readouterr().err


def test_eval_and_sample_of_a_native_student(tmp_path, capsys):
    cfg = toy_cfg(tmp_path)
    kwargs = cfg.teacher_training.network.kwargs()
    meta = CheckpointMeta(
        arch="mlp",
        arch_kwargs=kwargs,
        data_shape=[2],
        time_inputs=2,
        role="student",
        training=cfg.model_dump(mode="json"),
        extra={"objective": "flow_map"},
    )
    student = save_checkpoint(tmp_path / "student", build_student("mlp", (2,), kwargs, "flow_map"), meta)
    assert main(["eval", str(student), "--steps", "1,2", "--solver", "rk4"]) == 0
    table = json.loads((student / "eval_student.json").read_text())  # the solver does not apply to a student
    assert [(r["steps"], r["nfe"]) for r in table["rows"]] == [(1, 1), (2, 2)]
    assert table["kind"] == "student" and table["objective"] == "flow_map" and table["solver"] is None
    assert "student/flow_map" in capsys.readouterr().out
    (tmp_path / "other.yaml").write_text(
        dump_config(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_samples": 100})}))
    )
    assert main(["eval", str(student), "--steps", "1", "--config", str(tmp_path / "other.yaml")]) == 0
    assert json.loads((student / "eval_student.json").read_text())["n_samples"] == 100  # --config replaces
    assert main(["sample", str(student), "--steps", "1,2", "--n", "200", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
