"""A rank state written by 2 ranks resumes on 1, and one written by 1 resumes on 2 (an elastic pool that shrank
or grew), at ZeRO 0 and 1: the next step lands where the uninterrupted run's does. Real DeepSpeed on the CPU,
gloo ranks in subprocesses (``ds_reshard_worker.py``); ZeRO 2 is refused with the setting named."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from guide_store.embedded import free_port
from teachers.config import parse_config

WORKER = str(Path(__file__).with_name("ds_reshard_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def _phase(config: Path, folder: Path, phase: str, world: int) -> None:
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(config), str(folder), phase, port, str(r), str(world)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(err[-3000:])


def _config(tmp_path: Path, zero_stage: int) -> Path:
    raw = parse_config({"name": "reshard", "data": {"name": "eight_gaussians"},
                        "teacher": {"network": {"arch": "mlp", "hidden": 24, "depth": 2, "time_embed_dim": 8}},
                        "student": {"batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "workers": 1,
                                    "zero_stage": zero_stage, "objective": "velocity"}}).model_dump(mode="json")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return path


def _gap(folder: Path, a: str, b: str) -> float:
    x, y = load_file(str(folder / f"after-{a}.safetensors")), load_file(str(folder / f"after-{b}.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_a_state_resumes_at_another_world_size(tmp_path, zero_stage):
    config = _config(tmp_path, zero_stage)
    _phase(config, tmp_path, "train", 1)
    _phase(config, tmp_path, "train", 2)
    _phase(config, tmp_path, "resume-2", 1)  # shrank: two ranks' state on one
    _phase(config, tmp_path, "resume-1", 2)  # grew: one rank's state on two
    # the uninterrupted runs at 1 and 2 ranks agree up to float summation order: the yardstick
    floor = _gap(tmp_path, "1-to-1", "2-to-2")
    assert floor < 1e-5, floor
    # a resumed step lands where the uninterrupted one does; a step away from it moves the weights ~lr
    assert _gap(tmp_path, "2-to-1", "1-to-1") < 1e-5
    assert _gap(tmp_path, "1-to-2", "2-to-2") < 1e-5


def test_zero_2_is_refused_at_another_world_size(tmp_path):
    config = _config(tmp_path, 2)
    _phase(config, tmp_path, "train", 2)
    with pytest.raises(RuntimeError, match="ZeRO 2 state does not reshard .*student.workers: 2"):
        _phase(config, tmp_path, "resume-2", 1)


def test_shares_cover_every_old_rank_once():
    from student.engine_state import shares

    for old, new in ((2, 1), (3, 2), (1, 2), (4, 4), (5, 2)):
        taken = sorted(j for r in range(new) for j in shares(r, new, old))
        assert taken == list(range(old)), (old, new)
    assert shares(1, 2, 1) == []  # a rank the old world did not have starts with no records
