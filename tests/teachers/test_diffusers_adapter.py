"""A tiny diffusers flow-matching model, built and saved by the test, serves as a teacher."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from teachers.settings import TeacherPoolSettings
from teachers.checkpoint import CheckpointError
from teachers.diffusers_adapter import is_diffusers_dir
from teachers.guides import make_guides
from teachers.models import load_velocity as load_teacher, model_data_shape as teacher_data_shape
from teachers.teacher_actor import load_teachers


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    path = tmp_path_factory.mktemp("diffusers") / "unet"
    model.save_pretrained(path, safe_serialization=True)
    return model.eval(), path


def test_loads_with_the_flow_matching_sign_and_time_convention(tiny_unet):
    model, path = tiny_unet
    assert is_diffusers_dir(path) and teacher_data_shape(path) == (1, 8, 8)
    v = load_teacher(path, (1, 8, 8))
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 0.25, 1.0])
    with torch.no_grad():
        expected = -model(x, (1 - t) * 1000).sample  # diffusers predicts noise - data at sigma = 1 - t
        assert torch.allclose(v(x, t), expected, atol=1e-6)


def test_serves_as_a_guide_teacher(tiny_unet):
    _, path = tiny_unet
    teachers = load_teachers(TeacherPoolSettings(name="hf", checkpoints=[str(path)]), 2, (1, 8, 8))
    x0, x1 = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    g1, g2 = make_guides(x0, x1, teachers.guides, "euler_step", [1 / 3, 2 / 3])
    assert g1.shape == (4, 1, 8, 8) and torch.isfinite(g2).all()
    assert teachers.ids == ["hf:unet", "hf:unet"] and len(teachers.versions[0]) == 12


def test_wrong_shape_is_refused(tiny_unet):
    _, path = tiny_unet
    with pytest.raises(CheckpointError, match=r"data shape \[1, 8, 8\] does not match the data \[2\]"):
        load_teacher(path, (2,))
