"""Teacher actors and the controller on a real local Ray cluster, writing to a real Redis store."""

import logging
import time

import pytest
import torch

from cluster.config import TeacherPoolSettings, parse_config
from cluster.controller_actor import start_controller
from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore
from teachers.checkpoint import load_checkpoint
from teachers.data import toy_2d
from teachers.guides import CouplingSettings, couple, make_guides
from teachers.train_teacher import train_teacher


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teachers")
    paths = []
    for i, name in enumerate(("alpha", "beta")):
        cfg = parse_config(
            {
                "name": name,
                "seed": i,
                "run_dir": str(tmp),
                "data": {"name": "eight_gaussians", "n_train": 2000, "n_held_out": 200},
                "teacher": {
                    "network": {"arch": "mlp", "hidden": 32, "depth": 1, "time_embed_dim": 16},
                    "steps": 150 + 50 * i,
                    "batch_size": 128,
                    "log_every": 50,
                },
            }
        )
        paths.append(str(train_teacher(cfg, progress=False)))
    return paths


@pytest.fixture
def redis_url(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server.url


def run_config(tmp_path, name, pools, num_samples=256, block=32):
    return parse_config(
        {
            "name": name,
            "seed": 5,
            "run_dir": str(tmp_path),
            "data": {"name": "eight_gaussians", "n_train": 2000, "n_held_out": 200},
            "teacher": {"network": {"arch": "mlp"}},
            "guides": {
                "path": "cubic",
                "rule": "euler_step",
                "coupling": "inversion",
                "coupling_steps": 16,
                "block_size": block,
                "num_samples": num_samples,
            },
            "teachers": pools,
            "namespace": "bezier-distill-tests",
            "max_restarts": 2,
        }
    )


def wait_finished(controller, timeout=120):
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ray.get(controller.state.remote())
        if state["finished"]:
            return state
        time.sleep(0.3)
    raise AssertionError(f"run did not finish: {state}")


def read_all(store):
    out = []
    while got := store.get("reader", timeout_s=0.5, count=16):
        store.ack([d.id for d in got])
        out += [d.batch for d in got]
    return out


def test_actor_guides_equal_pure_functions_and_carry_two_teacher_ids(ray_cluster, two_teachers, redis_url, tmp_path):
    cfg = run_config(tmp_path, "bits", [{"name": "multi", "checkpoints": two_teachers, "replicas": 2, "num_cpus": 1}])
    controller = start_controller(cfg, redis_url)
    ray_cluster.get(controller.start_pools.remote())
    wait_finished(controller)
    store = RedisGuideStore(redis_url, cfg.name)
    batches = read_all(store)
    assert sum(len(b) for b in batches) == 256
    ids = torch.cat([b.sample_id for b in batches])
    assert sorted(ids.tolist()) == list(range(256))
    assert {b.producer for b in batches} <= {"multi-1", "multi-2"}  # made by the pool's actors
    a, b = (load_checkpoint(p)[0] for p in two_teachers)
    data = toy_2d("eight_gaussians", 2000, 200, seed=5).train
    for batch in batches:
        assert batch.teachers == ["multi:" + two_teachers[0].split("/")[-1], "multi:" + two_teachers[1].split("/")[-1]]
        assert batch.teacher_versions[0] != batch.teacher_versions[1]
        x0, x1 = couple(batch.sample_id, 5, data, a, CouplingSettings("inversion", "rk4", 16))
        g1, g2 = make_guides(x0, x1, [a, b], "euler_step", [1 / 3, 2 / 3])
        for got, want in zip(batch.control_points, [x0, g1, g2, x1]):
            assert torch.equal(got, want)  # bit for bit


def test_killed_actor_is_restarted_and_its_block_lands_once(ray_cluster, two_teachers, redis_url, tmp_path):
    cfg = run_config(
        tmp_path,
        "crash",
        [{"name": "solo", "checkpoints": [two_teachers[0]], "replicas": 1, "num_cpus": 1}],
        num_samples=2048,
        block=64,
    )
    controller = start_controller(cfg, redis_url)
    ray_cluster.get(controller.start_pools.remote())
    worker = ray_cluster.get_actor(f"{cfg.name}-solo-1", namespace=cfg.namespace)
    while ray_cluster.get(controller.state.remote())["done"] < 3:
        time.sleep(0.1)
    ray_cluster.kill(worker, no_restart=False)  # a crash: Ray restarts it
    assert ray_cluster.get(controller.check_workers.remote()) == []  # restarting is not dead
    assert ray_cluster.get(controller.state.remote())["workers"]["solo-1"]["state"] in ("restarting", "running")
    state = wait_finished(controller)
    assert state["workers"]["solo-1"]["restarts"] == 1
    # the actor is idle once it asked for a block after the last one; it may not have asked yet (CI saw that)
    with pytest.raises(
        Exception, match=r"no teacher actor 'nope'; the run's teacher actors: solo-1 \((idle|running)\)"
    ):
        ray_cluster.get(controller.remove_teacher.remote("nope", True))
    for _ in range(2):  # stopping works in any state, and again once stopped
        assert ray_cluster.get(controller.remove_teacher.remote("solo-1", True))["state"] == "removed"
    store = RedisGuideStore(redis_url, cfg.name)
    s = store.stats()
    assert s["produced"] == 2048  # the interrupted block was produced again, and landed once
    ids = torch.cat([b.sample_id for b in read_all(store)])
    assert sorted(ids.tolist()) == list(range(2048))
    events = (cfg.run_path / "events.jsonl").read_text()
    assert "teacher_restarted" in events


def test_remove_with_drain_loses_and_duplicates_nothing(ray_cluster, two_teachers, redis_url, tmp_path):
    cfg = run_config(
        tmp_path,
        "drain",
        [{"name": "p", "checkpoints": [two_teachers[1]], "replicas": 2, "num_cpus": 1}],
        num_samples=2048,
        block=32,
    )
    controller = start_controller(cfg, redis_url)
    ray_cluster.get(controller.start_pools.remote())
    while ray_cluster.get(controller.state.remote())["done"] < 4:
        time.sleep(0.1)
    removed = ray_cluster.get(controller.remove_teacher.remote("p-1", True))
    assert removed["state"] == "removed"
    added = ray_cluster.get(
        controller.add_teacher.remote(TeacherPoolSettings(name="late", checkpoints=[two_teachers[0]]), 1)
    )
    ray_cluster.get(controller.remove_teacher.remote("p-2", True))  # now only the added actor can finish the run
    state = wait_finished(controller)
    assert added == ["late-3"] and state["workers"]["late-3"]["blocks"] > 0
    assert state["workers"]["p-1"]["state"] == state["workers"]["p-2"]["state"] == "removed"
    store = RedisGuideStore(redis_url, cfg.name)
    ids = torch.cat([b.sample_id for b in read_all(store)])
    assert sorted(ids.tolist()) == list(range(2048))  # nothing lost, nothing twice
    # removed while it still loads: its constructor registers after the removal began, which is no restart
    # (it was counted as one, and the actor set running again, which kept a drain waiting on a full store)
    (early,) = ray_cluster.get(
        controller.add_teacher.remote(TeacherPoolSettings(name="early", checkpoints=[two_teachers[0]]), 1)
    )
    gone = ray_cluster.get(controller.remove_teacher.remote(early, True))
    assert gone["state"] == "removed" and gone["restarts"] == 0 and len(gone["nodes"]) == 1, gone  # where it ran
    events = (cfg.run_path / "events.jsonl").read_text()
    assert "teacher_removed" in events and "teacher_added" in events and "teacher_restarted" not in events


def test_adding_an_incompatible_teacher_is_refused(ray_cluster, redis_url, tmp_path):
    from teachers.checkpoint import CheckpointMeta, save_checkpoint
    from teachers.nets import build_network

    img = save_checkpoint(
        tmp_path / "img",
        build_network("mlp", (1, 8, 8), hidden=8, depth=1, time_embed_dim=8),
        CheckpointMeta(arch="mlp", arch_kwargs={"hidden": 8, "depth": 1, "time_embed_dim": 8}, data_shape=[1, 8, 8]),
    )
    cfg = run_config(tmp_path, "refuse", [])
    controller = start_controller(cfg, redis_url)
    with pytest.raises(Exception, match=r"data_shape \[1, 8, 8\] does not match the run's data \[2\]"):
        ray_cluster.get(controller.add_teacher.remote(TeacherPoolSettings(name="bad", checkpoints=[str(img)]), 1))
    with pytest.raises(Exception, match="checkpoint directory does not exist"):
        ray_cluster.get(
            controller.add_teacher.remote(TeacherPoolSettings(name="gone", checkpoints=[str(tmp_path / "nope")]), 1)
        )
    assert ray_cluster.get(controller.state.remote())["workers"] == {}


def test_a_production_loop_that_raises_fails_the_job_within_seconds_with_its_error(
    ray_cluster, two_teachers, redis_url, tmp_path, caplog
):
    """Nobody reads the store and it admits one record: the actor's second put times out in its production
    thread. The controller stops that actor, hands its block out again, and the job stops with the error."""
    from cluster.guide_stage import _progress

    cfg = run_config(tmp_path, "stuck", [{"name": "s", "checkpoints": [two_teachers[0]], "replicas": 1}])
    cfg = cfg.model_copy(
        update={"store": cfg.store.model_copy(update={"max_backlog_records": 1, "put_timeout_s": 0.5})}
    )
    controller = start_controller(cfg, redis_url)
    ray_cluster.get(controller.start_pools.remote())
    caplog.set_level(logging.INFO, logger="cluster")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no teacher actor is running .*\n  s-1: BackpressureTimeout"):
        _progress(cfg, controller, show_bar=False)
    assert time.monotonic() - start < 60
    lines = [r.getMessage() for r in caplog.records if r.name == "cluster.guide_stage"]
    assert any("s-1 stopped on an error" in line for line in lines), lines
    state = ray_cluster.get(controller.state.remote())
    assert state["workers"]["s-1"]["state"] == "failed" and state["queued"] + state["done"] == state["blocks"]
    assert "teacher_failed" in (cfg.run_path / "events.jsonl").read_text()


def _held(ray, resource: str) -> float:
    return ray.cluster_resources()[resource] - ray.available_resources().get(resource, 0.0)


def test_teacher_actors_hold_their_pools_resources_and_an_added_one_copies_or_overrides_them(
    ray_cluster, two_teachers, redis_url, tmp_path
):
    cfg = run_config(
        tmp_path,
        "placed",
        [
            {
                "name": "p",
                "checkpoints": [two_teachers[0]],
                "replicas": 2,
                "num_cpus": 1,
                "resources": {"teacher_host": 1.5},
            }
        ],
        num_samples=4096,
    )
    controller = start_controller(cfg, redis_url)
    ray_cluster.get(controller.start_pools.remote())
    deadline = time.monotonic() + 60
    while _held(ray_cluster, "teacher_host") < 3.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _held(ray_cluster, "teacher_host") == 3.0  # 2 actors x 1.5: Ray placed them where it is offered
    # `teachers add --pool p`: the new actor copies p's settings, its resources included ...
    copied = ray_cluster.get(controller.add_checkpoint.remote(two_teachers[1], 1, None, "copied", "p", {}))
    # ... and `--resources` / `--num-cpus` override them
    over = ray_cluster.get(
        controller.add_checkpoint.remote(
            two_teachers[1], 1, None, "over", "p", {"resources": {"teacher_host": 2.0}, "num_cpus": 0.5}
        )
    )
    while _held(ray_cluster, "teacher_host") < 6.5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _held(ray_cluster, "teacher_host") == 6.5, ray_cluster.available_resources()
    with pytest.raises(ray_cluster.exceptions.RayTaskError, match="no teacher pool 'nope'"):
        ray_cluster.get(controller.add_checkpoint.remote(two_teachers[1], 1, None, None, "nope", {}))
    for name in ("p-1", "p-2", *copied, *over):
        ray_cluster.get(controller.remove_teacher.remote(name, False))
    ray_cluster.kill(controller)
    deadline = time.monotonic() + 30
    while _held(ray_cluster, "teacher_host") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _held(ray_cluster, "teacher_host") == 0
