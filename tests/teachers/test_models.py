"""One loader for any model folder, and the named conventions a diffusers model is read in (real models,
built and saved by the tests)."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from student.models import load_model
from student.networks import build_student
from teachers.checkpoint import CheckpointError, CheckpointMeta, save_checkpoint
from teachers.conventions import CONVENTIONS, DEFAULT_CONVENTION
from teachers.models import check_model, load_velocity, model_data_shape, model_kind


def tiny_unet(out_channels=1):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A pipeline-style folder: ``unet/`` and ``scheduler/scheduler_config.json`` (500 training timesteps)."""
    root = tmp_path_factory.mktemp("pipeline")
    model = tiny_unet()
    model.save_pretrained(root / "unet", safe_serialization=True)
    diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=500, shift=3.0).save_config(root / "scheduler")
    return model, root


def test_registry_names_the_conventions_and_refuses_unknown_ones():
    assert DEFAULT_CONVENTION in CONVENTIONS and sorted(CONVENTIONS) == ["flow_match"]
    with pytest.raises(ValueError, match=r"unknown convention 'epsilon'; known: flow_match"):
        CONVENTIONS["epsilon"]


def test_flow_match_reads_num_train_timesteps_from_the_scheduler_config(pipeline_dir):
    model, root = pipeline_dir
    v = load_velocity(root / "unet", (1, 8, 8), "flow_match")
    assert v.num_train_timesteps == 500  # the shift (3.0) moves sampling steps only, not this map
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 0.3, 1.0])
    with torch.no_grad():
        assert torch.allclose(v(x, t), -model(x, (1 - t) * 500).sample, atol=1e-6)


@pytest.mark.parametrize("where", ["", "scheduler", "../scheduler"])
def test_the_scheduler_config_is_found_beside_or_above_the_model(tmp_path, where):
    tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=True)
    diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=250).save_config(tmp_path / "unet" / where)
    assert load_velocity(tmp_path / "unet", (1, 8, 8)).num_train_timesteps == 250
    (tmp_path / "unet" / where / "scheduler_config.json").unlink()
    assert load_velocity(tmp_path / "unet", (1, 8, 8)).num_train_timesteps == 1000  # none: the default


def test_a_scheduler_of_another_family_is_refused_naming_its_file(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=True)
    diffusers.DDPMScheduler().save_config(tmp_path / "scheduler")
    with pytest.raises(
        CheckpointError,
        match=r"scheduler/scheduler_config.json: scheduler 'DDPMScheduler' is not "
        r"a flow-matching scheduler",
    ):
        load_velocity(tmp_path / "unet", (1, 8, 8))


def test_an_output_that_is_not_a_velocity_is_refused_naming_config_json(tmp_path):
    tiny_unet(out_channels=2).save_pretrained(tmp_path, safe_serialization=True)  # e.g. a learned variance
    with pytest.raises(
        CheckpointError,
        match=r"config.json: in_channels 1, out_channels 2; the flow_match "
        r"convention needs a velocity",
    ):
        check_model(tmp_path, (1, 8, 8), "flow_match")


def test_data_shape_mismatch_names_the_file(pipeline_dir, tmp_path):
    _, root = pipeline_dir
    with pytest.raises(
        CheckpointError,
        match=r"unet/config.json: data shape \[1, 8, 8\] does not match the data "
        r"\[3, 8, 8\]",
    ):
        load_model(root / "unet", expect_data_shape=(3, 8, 8))
    save_checkpoint(
        tmp_path,
        build_student("mlp", (2,), {"hidden": 16, "depth": 1}, "velocity"),
        CheckpointMeta(arch="mlp", arch_kwargs={"hidden": 16, "depth": 1}, data_shape=[2]),
    )
    with pytest.raises(CheckpointError, match=r"model.json: data_shape \[2\] does not match the data \[1, 8, 8\]"):
        check_model(tmp_path, (1, 8, 8))


def _student(tmp_path, objective="flow_map", time_inputs=2):
    kwargs = {"hidden": 16, "depth": 1, "time_embed_dim": 8}
    net = build_student("mlp", (2,), kwargs, objective)
    meta = CheckpointMeta(
        arch="mlp",
        arch_kwargs=kwargs,
        data_shape=[2],
        time_inputs=time_inputs,
        role="student",
        training={"name": "x"},
        extra={"objective": objective},
    )
    return save_checkpoint(tmp_path, net, meta)


def test_kinds_and_samplers_of_native_folders(toy_teacher, tmp_path):
    assert model_kind(toy_teacher) == "teacher" and model_data_shape(toy_teacher) == (2,)
    teacher = load_model(toy_teacher)
    assert teacher.kind == "teacher" and teacher.training["name"] == "toy-test" and teacher.objective is None
    assert teacher.sampler("heun")(torch.randn(5, 2), 3).nfe == 6  # the solver applies to teachers
    student = load_model(_student(tmp_path))
    assert student.kind == "student" and student.objective == "flow_map" and student.training == {"name": "x"}
    sol = student.sampler("rk4")(torch.randn(5, 2), 3)  # the solver does not apply to students
    assert sol.nfe == 3 and sol.x.shape == (5, 2)


def test_a_student_whose_time_inputs_do_not_fit_its_objective_is_refused(tmp_path):
    path = _student(tmp_path)
    doc = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**doc, "extra": {"objective": "velocity"}}))
    with pytest.raises(CheckpointError, match=r"model.json: objective 'velocity' needs time_inputs 1"):
        load_model(path)


def test_a_student_is_not_a_teacher_velocity(tmp_path):
    with pytest.raises(CheckpointError, match="a student checkpoint, not a teacher"):
        load_velocity(_student(tmp_path), (2,))
