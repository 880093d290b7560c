"""A rank state written by 2 ranks resumes on 1, and one written by 1 resumes on 2 (an elastic pool that shrank
or grew), at ZeRO 0 and 1: the next step lands where the uninterrupted run's does. Real DeepSpeed on the CPU,
gloo ranks in subprocesses (``ds_reshard_worker.py``, both stages in each phase's processes); ZeRO 2 is
refused with the setting named."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from guide_store.embedded import free_port
from student.engine_state import FORMAT, load_rank_state, rank_file
from teachers.checkpoint import CheckpointError
from cluster.config import parse_config

WORKER = str(Path(__file__).with_name("ds_reshard_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def _phase(configs: list[Path], folder: Path, phase: str, world: int) -> None:
    port = str(free_port())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(folder), phase, port, str(r), str(world), *map(str, configs)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(err[-3000:])


def _config(tmp_path: Path, zero_stage: int) -> Path:
    raw = parse_config(
        {
            "name": "reshard",
            "data": {"name": "eight_gaussians"},
            "teacher": {"network": {"arch": "mlp", "hidden": 24, "depth": 2, "time_embed_dim": 8}},
            "student": {
                "batch_size": 8,
                "lr": 1e-2,
                "warmup_steps": 0,
                "workers": 1,
                "zero_stage": zero_stage,
                "objective": "velocity",
            },
        }
    ).model_dump(mode="json")
    path = tmp_path / f"config-{zero_stage}.json"
    path.write_text(json.dumps(raw))
    return path


def _gap(folder: Path, a: str, b: str) -> float:
    x, y = load_file(str(folder / f"after-{a}.safetensors")), load_file(str(folder / f"after-{b}.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


def test_a_state_resumes_at_another_world_size(tmp_path):
    stages = (0, 1)
    configs = [_config(tmp_path, stage) for stage in stages]  # both stages in each phase's processes
    _phase(configs, tmp_path, "train", 1)
    _phase(configs, tmp_path, "train", 2)
    _phase(configs, tmp_path, "resume-2", 1)  # shrank: two ranks' state on one
    _phase(configs, tmp_path, "resume-1", 2)  # grew: one rank's state on two
    for k, stage in enumerate(stages):
        folder = tmp_path / str(k)
        # the uninterrupted runs at 1 and 2 ranks agree up to float summation order: the yardstick
        assert _gap(folder, "1-to-1", "2-to-2") < 1e-5, stage
        # a resumed step lands where the uninterrupted one does (a wrong reshard lands ~lr x the weights away)
        assert _gap(folder, "2-to-1", "1-to-1") < 1e-5, stage
        assert _gap(folder, "1-to-2", "2-to-2") < 1e-5, stage


def test_zero_2_is_refused_at_another_world_size(tmp_path):
    """Refused from the files' metadata, before any optimizer state is read (no engine needed)."""
    for rank in range(2):
        meta = {
            "format": FORMAT,
            "version": 1,
            "rank": rank,
            "world_size": 2,
            "zero_stage": 2,
            "optimizer": {},
            "extra": {},
        }
        save_file({"x": torch.zeros(1)}, str(rank_file(tmp_path, rank)), metadata={"bezier_distill": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="ZeRO 2 state does not reshard .*student.workers: 2"):
        load_rank_state(tmp_path, None, None, 0, 1, 2)


def test_shares_cover_every_old_rank_once():
    from student.engine_state import shares

    for old, new in ((2, 1), (3, 2), (1, 2), (4, 4), (5, 2)):
        taken = sorted(j for r in range(new) for j in shares(r, new, old))
        assert taken == list(range(old)), (old, new)
    assert shares(1, 2, 1) == []  # a rank the old world did not have starts with no records
