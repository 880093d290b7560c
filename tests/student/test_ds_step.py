"""Real DeepSpeed student steps on the CPU (one gloo rank in a subprocess): bf16 is honoured (bf16 weights,
a bf16 forward), ZeRO 1 and 2 take the loop's learning rate, nothing is compiled on first use, even
with a ``TORCH_CUDA_ARCH_LIST`` that DeepSpeed's op builder cannot parse, and a rank's saved state resumes
exactly at ZeRO 0, 1 and 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guide_store.embedded import free_port
from teachers.schedule import lr_at
from cluster.config import parse_config

WORKER = str(Path(__file__).with_name("ds_step_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def run_steps(tmp_path, arch_list: str, *cases: dict) -> list[dict]:
    """Each case (top-level config keys, ``student`` among them) stepped in one worker process."""
    files = []
    for k, top in enumerate(cases):
        top = dict(top)
        student = {"batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "steps": 10, "workers": 1, **top.pop("student")}
        raw = parse_config(
            {
                "name": "ds-step",
                "data": {"name": "eight_gaussians"},
                "teacher": {"network": {"arch": "mlp", "hidden": 16, "depth": 1, "time_embed_dim": 8}},
                "student": student,
                **top,
            }
        ).model_dump(mode="json")
        files.append(tmp_path / f"config-{k}.json")
        files[-1].write_text(json.dumps(raw))
    extensions = tmp_path / "torch_extensions"
    env = {
        **os.environ,
        "TORCH_EXTENSIONS_DIR": str(extensions),
        "TORCH_CUDA_ARCH_LIST": arch_list,
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, WORKER, str(free_port()), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    # nothing compiled: DeepSpeed's JIT builds land in TORCH_EXTENSIONS_DIR
    assert not extensions.exists() or not any(extensions.iterdir()), sorted(extensions.rglob("*"))
    assert "built successfully" not in out.stdout + out.stderr
    results = [json.loads(line) for line in out.stdout.strip().splitlines() if line.startswith("{")]
    assert len(results) == len(cases), out.stdout[-3000:]
    for result in results:
        assert result["lrs"] == [pytest.approx(lr_at(k, 1e-3, 2, 10)) for k in range(4)]  # the loop's lr is used
        assert all(abs(x) < 1e3 for x in result["losses"])
        assert result["resume_max_diff"] == 0.0, result  # the resumed engine's next step is the original's
    return results


@pytest.fixture(scope="module")
def bf16_by_stage(tmp_path_factory):
    """ZeRO 1 and 2 in bf16, with an arch list DeepSpeed's op builder cannot parse, in one worker process."""
    stages = [1, 2]
    results = run_steps(
        tmp_path_factory.mktemp("bf16"),
        "9.0a",
        *[{"precision": "bf16", "student": {"zero_stage": stage, "objective": "flow_map"}} for stage in stages],
    )
    return dict(zip(stages, results))


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_bf16_student_step_on_cpu_trains_in_bf16_without_building_ops(bf16_by_stage, zero_stage):
    result = bf16_by_stage[zero_stage]
    assert result["precision"] == "bf16" and result["optimizer"] == "DeepSpeedZeroOptimizer"
    assert result["parameter_dtypes"] == ["torch.bfloat16"]  # DeepSpeed's bf16 mode on the CPU accelerator
    assert result["forward_dtypes"] == result["loss_dtypes"] == ["torch.bfloat16"]
    assert result["ema_dtypes"] == ["torch.float32"]


def test_student_precision_overrides_the_run_and_auto_is_fp32_on_cpu(tmp_path):
    (result,) = run_steps(
        tmp_path, "8.0;9.0+PTX", {"precision": "bf16", "student": {"precision": "fp32", "objective": "velocity"}}
    )
    assert result["precision"] == "fp32" and result["parameter_dtypes"] == ["torch.float32"]
    assert result["forward_dtypes"] == result["loss_dtypes"] == ["torch.float32"]


def test_a_saved_rank_state_resumes_exactly_at_every_zero_stage(tmp_path):
    results = run_steps(
        tmp_path, "8.0", *[{"student": {"zero_stage": stage, "objective": "flow_map"}} for stage in (0, 1, 2)]
    )
    assert [r["optimizer"] for r in results] == ["Adam", "DeepSpeedZeroOptimizer", "DeepSpeedZeroOptimizer"]
    assert all(r["precision"] == "fp32" for r in results)
