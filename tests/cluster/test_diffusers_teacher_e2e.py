"""A user's own pretrained diffusers model as the only teacher of ``bezier-distill run``, end to end: a tiny
``UNet2DModel`` trained here in the flow_match convention on the digits, saved with ``save_pretrained``,
distilled through the real pipeline (Ray actors, Redis store, DeepSpeed student pool) into a student of its own
architecture, started from its weights, with a distribution-matching phase it scores; then the CLI's ``eval``
and ``sample`` of the run's student and of the diffusers folder (with ``--config``)."""

import json
import logging
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.config import dump_config, parse_config
from cluster.job import run

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffusers_digits_teacher import train_flow_match_unet  # noqa: E402 - the helper beside the tests


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
                # the distribution-matching phase, scored by the diffusers teacher, its classifier on its mid_block
                "finetune": {"steps": 10, "real_weight": 0.5},
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
    in_phase = [r for r in history if r.get("phase") == "distribution"]
    assert all(0 <= r["real_accuracy"] <= 1 and r["classifier_loss"] > 0 for r in in_phase), in_phase
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
