"""A whole run in bf16 on the CPU (tiny 2-D config through ``cluster.job.run``): every stage computes in
bf16 and the report says so, with the run's provenance."""

import json

import pytest

from cluster.config import parse_config
from cluster.job import run
from cluster.provenance import PACKAGES

pytestmark = pytest.mark.slow


def tiny_bf16_run(tmp_path):
    return parse_config(
        {
            "name": "bf16-run",
            "seed": 1,
            "run_dir": str(tmp_path),
            "precision": "bf16",
            "data": {"name": "eight_gaussians", "n_train": 1000, "n_held_out": 200},
            "teacher": {
                "network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16},
                "steps": 150,
                "batch_size": 128,
                "warmup_steps": 10,
                "log_every": 50,
            },
            "eval": {"n_samples": 200, "steps": [1, 2], "slices": 32},
            "guides": {"path": "cubic", "coupling_steps": 4, "block_size": 128, "num_samples": 512},
            "teachers": [{"name": "t", "checkpoints": ["self"], "replicas": 1}],
            "student": {
                "steps": 20,
                "batch_size": 64,
                "workers": 1,
                "warmup_steps": 2,
                "checkpoint_every": 20,
                "log_every": 10,
                "eval_steps": [1],
            },
            "namespace": "bezier-distill-tests",
        }
    )


def test_bf16_run_on_cpu_records_bf16_for_every_stage(ray_cluster, tmp_path):
    cfg = tiny_bf16_run(tmp_path)
    report = run(cfg, show_bar=False)
    on_disk = json.loads((cfg.run_path / "report.json").read_text())
    assert on_disk["stages"] == json.loads(json.dumps(report["stages"]))
    stages = on_disk["stages"]
    teacher = str(cfg.teacher_path)
    assert stages["teacher_training"] == {teacher: {"device": "cpu", "precision": "bf16"}}
    assert stages["guides"] and all(w == {"device": "cpu", "precision": "bf16"} for w in stages["guides"].values())
    assert stages["student"] == {"device": "cpu", "precision": "bf16", "parameter_dtype": "bfloat16", "workers": 1}
    assert stages["evaluation"] == {"device": "cpu", "precision": "bf16"}
    assert "used" not in on_disk["quality"]

    train_report = json.loads((cfg.teacher_path / "train_report.json").read_text())
    assert (train_report["device"], train_report["precision"]) == ("cpu", "bf16")
    meta = json.loads((cfg.teacher_path / "model.json").read_text())
    assert meta["extra"]["trained_with"] == {"device": "cpu", "precision": "bf16"}

    prov = on_disk["provenance"]
    assert set(PACKAGES) <= set(prov["packages"]) and prov["packages"]["torch"] and prov["packages"]["deepspeed"]
    assert prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40
    assert prov["seeds"] == {"run": 1, "data_split": 1, "teachers": {teacher: 1}}
    plan = on_disk["device_plan"]
    assert plan["cluster_gpus"] == 0 and plan["student"]["precision"] == "bf16" and plan["student_workers"] == 1
    assert all(r["sliced_w2"] == r["sliced_w2"] for r in on_disk["quality"]["student"])  # finite numbers


def test_device_cuda_without_a_gpu_is_a_config_error_before_any_work(ray_cluster, tmp_path):
    from cluster.config import ConfigError

    cfg = tiny_bf16_run(tmp_path).model_copy(update={"device": "cuda"})
    with pytest.raises(ConfigError, match="device: cuda .* 0 GPUs"):
        run(cfg, show_bar=False)
    assert not cfg.teacher_path.exists()
