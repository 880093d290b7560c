"""A user's own pretrained diffusers model as the only teacher of ``bezier-distill run``, end to end: a tiny
``UNet2DModel`` trained here in the flow_match convention on the digits, saved with ``save_pretrained``,
distilled through the real pipeline (Ray actors, Redis store, DeepSpeed student pool) into a student of its own
architecture, started from its weights, with a distribution-matching phase it scores; then the CLI's ``eval``
and ``sample`` of the run's student and of the diffusers folder (with ``--config``)."""

import json
import logging

import pytest
import torch

from cluster.cli import main
from cluster.config import dump_config, parse_config
from cluster.job import run
from teachers.data import digits

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.slow


def train_flow_match_unet(out, steps: int = 400, num_train_timesteps: int = 1000):
    """Flow matching in diffusers' convention: ``x = sigma * noise + (1 - sigma) * data``, the model called with
    ``sigma * num_train_timesteps`` and fitted to ``noise - data``."""
    torch.manual_seed(0)
    data = digits(seed=0).train
    model = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x1 = data[torch.randint(0, data.shape[0], (64,), generator=g)]
        noise = torch.randn(x1.shape, generator=g)
        sigma = torch.rand(64, generator=g)
        s = sigma.view(-1, 1, 1, 1)
        loss = (model(s * noise + (1 - s) * x1, sigma * num_train_timesteps).sample - (noise - x1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out, safe_serialization=True)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps)
    scheduler.save_config(out.parent / "scheduler")  # a pipeline's layout: MODEL/../scheduler
    return out, loss.item()


def hf_run_config(tmp_path, unet):
    return parse_config(
        {
            "name": "hf-e2e",
            "seed": 0,
            "run_dir": str(tmp_path / "runs"),
            "data": {"name": "digits", "n_held_out": 450},
            # the student's network with student.init scratch (init teacher copies the diffusers model)
            "teacher": {"network": {"arch": "unet", "channels": 8, "time_embed_dim": 16}},
            "eval": {"steps": [1, 8], "n_samples": 64, "kid_subset_size": 32},
            "guides": {
                "path": "linear",
                "coupling": "generated",
                "coupling_solver": "euler",
                "coupling_steps": 8,
                "block_size": 64,
                "num_samples": 256,
            },
            "teachers": [{"name": "hf", "checkpoints": [str(unet)], "convention": "flow_match"}],
            "student": {
                "objective": "flow_map",
                "init": "teacher",
                "steps": 40,
                "batch_size": 64,
                "workers": 1,
                "checkpoint_every": 40,
                "log_every": 10,
                "eval_steps": [1, 2],
                "finetune": {"steps": 10},  # the distribution-matching phase, scored by the diffusers teacher
            },
            "namespace": "bezier-distill-tests",
        }
    )


def test_a_diffusers_teacher_is_distilled_and_both_models_evaluate_from_the_cli(ray_cluster, tmp_path, capsys, caplog):
    unet, loss = train_flow_match_unet(tmp_path / "pretrained" / "unet", num_train_timesteps=500)
    assert loss < 0.6, loss
    cfg = hf_run_config(tmp_path, unet)
    caplog.set_level(logging.INFO, logger="cluster")
    report = run(cfg, show_bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cluster.")]

    assert sum("is a diffusers model: the student is of its architecture" in s for s in lines) == 1
    folder = cfg.run_path
    for name in ("report.json", "samples.png", "student/model.safetensors", "student/model.json"):
        assert (folder / name).is_file(), name
    quality = report["quality"]
    assert list(quality["teachers"]) == [str(unet)] and "fid" in quality["floor"]
    assert [r["steps"] for r in quality["student"]] == [1, 2]
    for row in [quality["floor"], *quality["student"], *quality["teachers"][str(unet)]]:  # FIDs with intervals
        assert row["fid_interval"][0] <= row["fid"] <= row["fid_interval"][1], row
    for row in quality["student"]:
        low, high = row["fid_to_teacher_best_interval"]
        assert low <= row["fid_to_teacher_best"] <= high, row
    assert quality["teacher_best"]["interval"][0] <= quality["teacher_best"]["value"]
    assert report["production"]["store"]["produced"] == 256
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    phased = [r["step"] for r in history if r.get("phase") == "distribution"]
    assert phased and min(phased) > 30 and all(r["loss"] == r["loss"] for r in history if "loss" in r), history
    saved = json.loads((folder / "student" / "model.json").read_text())
    assert saved["arch"] == "diffusers" and saved["arch_kwargs"]["model_class"] == "UNet2DModel", saved

    student = folder / "student"
    assert main(["eval", str(student), "--steps", "1,2", "--n-samples", "64"]) == 0
    table = json.loads((student / "eval_student.json").read_text())
    assert [(r["steps"], r["nfe"]) for r in table["rows"]] == [(1, 1), (2, 2)] and "fid" in table["rows"][0]
    assert main(["sample", str(student), "--steps", "1,2", "--out", str(tmp_path / "student.png")]) == 0

    config = tmp_path / "hf.yaml"
    config.write_text(dump_config(cfg))
    assert main(["eval", str(unet), "--config", str(config), "--steps", "1,8", "--n-samples", "64"]) == 0
    table = json.loads((unet / "eval_euler.json").read_text())
    rows = {r["steps"]: r for r in table["rows"]}
    assert table["kind"] == "diffusers" and rows[8]["nfe"] == 8
    assert rows[8]["fid"] < rows[1]["fid"], rows  # the teacher's ODE, read in its convention, improves with steps
    assert (
        main(["sample", str(unet), "--config", str(config), "--steps", "1,8", "--out", str(tmp_path / "hf.png")]) == 0
    )
    for png in ("student.png", "hf.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "Traceback" not in capsys.readouterr().err
