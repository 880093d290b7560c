"""``bezier-distill run`` end to end on a small 2-D config: teacher training (a Ray task), teacher actors, the
Redis guide store, the DeepSpeed student pool in Ray Train, evaluation and the run folder."""

import json

import pytest

from cluster.config import ConfigError, parse_config
from cluster.job import run
from cluster.nodes import cpu_shortage

pytestmark = pytest.mark.slow


def small_run(tmp_path):
    return parse_config(
        {
            "name": "toy-e2e",
            "seed": 0,
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 4000, "n_held_out": 1000},
            "teacher": {
                "network": {"arch": "mlp", "hidden": 64, "depth": 2, "time_embed_dim": 32},
                "lr": 3e-3,
                "steps": 600,
                "batch_size": 256,
                "ema_decay": 0.99,
                "log_every": 100,
            },
            "eval": {"n_samples": 1000, "slices": 128},
            "guides": {
                "path": "cubic",
                "coupling": "inversion",
                "coupling_steps": 16,
                "block_size": 256,
                "num_samples": 2048,
            },
            "teachers": [{"name": "teacher", "checkpoints": ["self", "self:1"], "replicas": 1}],
            "student": {
                "objective": "flow_map",
                "steps": 300,
                "batch_size": 256,
                "lr": 1e-3,
                "max_reuse": 64,
                "workers": 2,
                "checkpoint_every": 100,
                "log_every": 25,
            },
            "namespace": "bezier-distill-tests",
        }
    )


def test_run_end_to_end_one_step_student_beats_one_euler_step(ray_cluster, tmp_path):
    cfg = small_run(tmp_path)
    report = run(cfg, show_bar=False)

    folder = cfg.run_path
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "report.json",
        "production.json",
        "samples.png",
        "student_loss.png",
        "student/model.safetensors",
        "student/model.json",
        "teacher/model.safetensors",
        "teacher-1/model.safetensors",
    ):
        assert (folder / name).is_file(), name
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["timings"]["total_s"] > 0 and on_disk["quality"] == json.loads(json.dumps(report["quality"]))

    quality = report["quality"]
    assert sorted(quality["teachers"]) == sorted([str(folder / "teacher"), str(folder / "teacher-1")])
    student = {r["steps"]: r for r in quality["student"]}
    assert sorted(student) == [1, 2, 4] and all(r["nfe"] == r["steps"] for r in student.values())
    teacher = {r["steps"]: r for r in quality["teachers"][str(folder / "teacher")]}
    assert sorted(teacher) == [1, 2, 4, 8, 32]
    labels = [r["label"] for r in quality["teachers"][str(folder / "teacher")]]
    assert labels == ["teacher0/euler"] * 5 + ["teacher0/rk4"]  # eval.reference_solver at reference_steps
    every = [r["sliced_w2"] for rs in quality["teachers"].values() for r in rs]
    best = quality["teacher_best"]
    assert best["metric"] == "sliced_w2" and best["value"] == min(every)
    for row in quality["student"]:
        assert row["sliced_w2_to_teacher_best"] == round(row["sliced_w2"] / best["value"], 4)
    assert sorted(quality["teacher_straightness"]) == sorted(quality["teachers"])
    assert all(0 < gap < 1 for gap in quality["teacher_straightness"].values()), quality["teacher_straightness"]
    assert student[1]["sliced_w2"] < 0.5 * teacher[1]["sliced_w2"], (student[1], teacher[1])
    assert "sliced_w2" in quality["floor"]

    store = report["production"]["store"]
    assert store["produced"] == cfg.guides.num_samples
    assert store["produced"] == store["acknowledged"] + store["dead_lettered"] and store["backlog"] == 0
    training = report["student_training"]
    assert training["steps"] >= 300 and training["consumption"]["consumed_twice"] == 0
    assert training["consumption"]["records"] == cfg.guides.num_samples


def test_a_cluster_too_small_for_the_run_is_refused_before_any_work(ray_cluster, tmp_path):
    """The shared test cluster has 8 logical CPUs; 7 teacher actors and 2 student workers cannot run at once,
    and Ray would keep the student pool waiting for ever: the run says so (and how to fix it) before any
    teacher trains."""
    small = small_run(tmp_path)
    cfg = small.model_copy(update={"teacher_pool": [small.teacher_pool[0].model_copy(update={"replicas": 7})]})
    cpus = ray_cluster.cluster_resources()["CPU"]
    assert cpus == 8
    with pytest.raises(
        ConfigError,
        match=r"the Ray cluster has 8 CPUs, and the run holds 9 at once: 7 for the "
        r"teacher actors .* 2 student worker\(s\) .*ray start --head --num-cpus=9",
    ):
        run(cfg, show_bar=False)
    assert not (cfg.run_path / "teacher").exists()  # nothing trained
    assert cpu_shortage(cfg, 9, 2) is None and cpu_shortage(cfg, 9, 3) is not None


def test_placement_no_node_offers_is_refused_before_any_work(ray_cluster, tmp_path):
    """The shared test cluster offers 8 of teacher_host and student_host and nothing else: a run whose actors or
    workers ask for more, or for a resource no node offers, would wait for ever; it is refused with the fix."""
    small = small_run(tmp_path)
    teachers = [small.teacher_pool[0].model_copy(update={"resources": {"teacher_host": 5.0}, "replicas": 2})]
    student = small.student.model_copy(update={"resources_per_worker": {"gpu_host": 1.0}})
    cfg = small.model_copy(update={"teacher_pool": teachers, "student": student})
    with pytest.raises(
        ConfigError,
        match=r"teachers\[.*\]\.resources \(2 x 5\) ask for 10 of resource 'teacher_host', "
        r"the cluster's nodes offer 8; student.resources_per_worker \(2 x 1\) ask "
        r"for 2 of resource 'gpu_host', the cluster's nodes offer 0.*ray start",
    ):
        run(cfg, show_bar=False)
    assert not (cfg.run_path / "teacher").exists()  # nothing trained
