"""The device/precision plan: pure logic, checked with made-up cluster GPU counts (no Ray, no GPU)."""

import pytest
import torch

from cluster.config import ConfigError, parse_config
from teachers.device_plan import STUDENT_GPU_SHARE, pool_gpus, resolve_device, resolve_precision
from teachers.precision import autocast


def config(**top):
    student = top.pop("student", {})
    teachers = top.pop("teachers", [{"name": "t", "checkpoints": ["self", "self:1"], "replicas": 2}])
    return parse_config(
        {
            "name": "plan",
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp"}},
            "teachers": teachers,
            "guides": {"block_size": 64, "num_samples": 1024},
            "student": {"workers": 4, **student},
            **top,
        }
    )


def test_auto_on_a_cpu_cluster_is_fp32_everywhere_and_keeps_the_workers():
    plan = resolve_device(config(), cluster_gpus=0)
    for stage in (plan.teacher_training, plan.guides, plan.student, plan.evaluation):
        assert (stage.device, stage.precision, stage.gpus) == ("cpu", "fp32", 0.0)
    assert plan.student_workers == 4 and plan.notes == ()


def test_auto_with_gpus_uses_them_in_bf16_and_caps_the_workers():
    plan = resolve_device(config(), cluster_gpus=2)
    for stage in (plan.teacher_training, plan.guides, plan.student, plan.evaluation):
        assert (stage.device, stage.precision) == ("cuda", "bf16")
    assert plan.teacher_training.gpus == 1.0  # two own teachers, two GPUs
    assert plan.student.gpus == STUDENT_GPU_SHARE > 0.5  # never two ranks on one GPU
    # all actors together fit beside a rank on one GPU, however Ray packs them
    assert 2 * plan.guides.gpus <= 1 - STUDENT_GPU_SHARE and plan.guides.gpus == pytest.approx(0.245)
    assert plan.student_workers == 2 and "capped at 2" in plan.notes[0]
    one = resolve_device(config(), cluster_gpus=1)
    assert one.teacher_training.gpus == 0.5 and one.guides.gpus == pytest.approx(0.245) and one.student_workers == 1
    assert pool_gpus(one, 0.0) == one.guides.gpus and pool_gpus(one, 1.0) == 1.0


def test_explicit_settings_win_and_student_precision_overrides_the_run():
    plan = resolve_device(config(precision="bf16", student={"precision": "fp32"}), cluster_gpus=0)
    assert plan.teacher_training.precision == plan.guides.precision == plan.evaluation.precision == "bf16"
    assert plan.student.precision == "fp32" and plan.student.precision_key == "student.precision"
    plan = resolve_device(config(precision="fp16"), cluster_gpus=1)
    assert plan.student.precision == "fp16" and plan.student.precision_key == "precision"
    # guides.precision: the teacher actors' production alone (bf16 teacher inference is twice as fast here)
    guides = config(guides={"block_size": 64, "num_samples": 1024, "precision": "bf16"})
    for gpus in (0, 1):
        plan = resolve_device(guides, cluster_gpus=gpus)
        assert plan.guides.precision == "bf16" and plan.guides.precision_key == "guides.precision"
        assert plan.student.precision == plan.evaluation.precision == ("fp32" if gpus == 0 else "bf16")
    assert resolve_device(guides, cluster_gpus=1).guides.gpus == resolve_device(config(), cluster_gpus=1).guides.gpus
    assert resolve_device(config(device="cpu"), cluster_gpus=8).student.device == "cpu"


def test_bad_requests_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match="device: cuda .* 0 GPUs"):
        resolve_device(config(device="cuda"), cluster_gpus=0)
    with pytest.raises(ConfigError, match="^precision: fp16 needs a GPU"):
        resolve_device(config(precision="fp16"), cluster_gpus=0)
    with pytest.raises(ConfigError, match="^student.precision: fp16 needs a GPU"):
        resolve_device(config(student={"precision": "fp16"}), cluster_gpus=0)
    with pytest.raises(ConfigError, match="^guides.precision: fp16 needs a GPU"):
        resolve_device(config(guides={"precision": "fp16"}), cluster_gpus=0)
    with pytest.raises(ConfigError, match="student.gpus_per_worker"):
        resolve_device(config(device="cpu", student={"gpus_per_worker": 1}), cluster_gpus=1)
    with pytest.raises(ConfigError, match="student.gpus_per_worker: 0.5 would let Ray put two student ranks"):
        resolve_device(config(student={"gpus_per_worker": 0.5}), cluster_gpus=4)
    with pytest.raises(ConfigError, match="allowed here: auto, fp32, fp16"):
        resolve_precision("bf16", "precision", on_gpu=True, bf16_supported=False)
    assert resolve_precision("auto", "precision", on_gpu=True, bf16_supported=False) == "fp32"
    with pytest.raises(ConfigError) as err:
        config(precision="half")
    assert "precision" in str(err.value) and "'bf16'" in str(err.value)


def test_autocast_runs_linear_layers_in_bf16_on_the_cpu():
    layer = torch.nn.Linear(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize("gpus,replicas,workers", [(1, 2, 1), (2, 2, 2), (2, 3, 2), (1, 6, 1), (4, 9, 4)])
def test_the_plan_shares_always_fit_however_ray_packs_them(gpus, replicas, workers):
    """Worst case for Ray's packing: every teacher actor on one GPU; every student rank still finds a GPU
    with its share free, and no two ranks share a GPU."""
    plan = resolve_device(
        config(teachers=[{"name": "t", "checkpoints": ["self"], "replicas": replicas}], student={"workers": workers}),
        cluster_gpus=gpus,
    )
    free = [1.0] * gpus
    free[0] -= replicas * plan.guides.gpus  # all actors packed on GPU 0
    assert free[0] >= 0
    for _ in range(plan.student_workers):
        slot = next((i for i, f in enumerate(free) if f >= plan.student.gpus - 1e-12), None)
        assert slot is not None, (free, plan)
        free[slot] -= plan.student.gpus
    assert plan.student.gpus > 0.5 and plan.student_workers == min(workers, gpus)
