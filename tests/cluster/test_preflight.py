"""Pre-flight checks against real parts: a real redis-server with a password, a closed port, one real
DeepSpeed student step in a fresh process, and ``bezier-distill doctor`` / ``run`` as a user calls them."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.config import load_config
from cluster.preflight import PreflightError, _step_key, input_checks, preflight, step_job, store_check
from guide_store.embedded import EmbeddedRedis, free_port
from teachers.device_plan import resolve_device

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("locked"), password="s3cret", fsync="no") as server:
        yield server


def _cfg(tmp_path, *overrides):
    return load_config(REPO / "configs" / "smoke.yaml", [f"run_dir={tmp_path}", *overrides])


def test_store_check_names_store_url_and_hides_the_password(tmp_path, locked_redis):
    good = store_check(_cfg(tmp_path, f"store.url={locked_redis.url}"))
    assert good.ok and "answers" in good.detail and "s3cret" not in good.detail
    wrong = locked_redis.url.replace("s3cret", "wrong")
    start = time.monotonic()
    bad = store_check(_cfg(tmp_path, f"store.url={wrong}"))
    assert bad.ok is False and "store.url" in bad.detail and "wrong" not in bad.detail and "password" in bad.fix
    none = store_check(_cfg(tmp_path, f"store.url=redis://127.0.0.1:{locked_redis.port}/0"))
    assert none.ok is False and "store.url" in none.detail
    closed = store_check(_cfg(tmp_path, f"store.url=redis://127.0.0.1:{free_port()}/0"))
    assert closed.ok is False and "no Redis answers" in closed.detail
    assert time.monotonic() - start < 15


@pytest.mark.parametrize(
    "precision,dtype", [("auto", "fp32 (parameters float32)"), ("bf16", "bf16 (parameters bfloat16)")]
)
def test_preflight_runs_a_real_student_step(tmp_path, precision, dtype, monkeypatch):
    monkeypatch.setenv("BEZIER_DISTILL_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tmp_path, f"precision={precision}")
    start = time.monotonic()
    checks = preflight(cfg, resolve_device(cfg, 0))
    step = checks[-1]
    assert step.name == "student step" and step.ok, step
    assert f"on cpu in {dtype}" in step.detail and "remembered" not in step.detail, step.detail
    assert "one of its distribution-matching phase" in step.detail, step.detail  # smoke.yaml has the phase
    assert time.monotonic() - start < 60  # about 8 s on an idle 2-core machine

    # the pass is remembered for settings that decide it; another seed, step count or folder takes no step
    again = _cfg(tmp_path / "other", f"precision={precision}", "seed=5", "student.steps=70")
    start = time.monotonic()
    step = preflight(again, resolve_device(again, 0))[-1]
    assert step.ok and "remembered" in step.detail and f"on cpu in {dtype}" in step.detail, step.detail
    assert time.monotonic() - start < 5
    job = lambda c: step_job(c, (1, 8, 8), "cpu")
    for change in (
        "student.batch_size=3",
        "student.objective=velocity",
        "student.zero_stage=2",
        "precision=fp32",
        "student.threads=2",
        "student.finetune.steps=0",
        "student.finetune.sample_steps=[1,2]",
        "student.finetune.real_weight=0",  # smoke.yaml has the term at 0.5
    ):
        changed = _cfg(tmp_path, f"precision={precision}", change)
        assert _step_key(changed, job(changed)) != _step_key(cfg, job(cfg)), change


def test_run_stops_before_any_teacher_trains_on_a_bad_store(tmp_path, capsys):
    start = time.monotonic()
    code = main(
        [
            "run",
            str(REPO / "configs" / "smoke.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            f"store.url=redis://127.0.0.1:{free_port()}/0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "pre-flight check failed" in err and "store.url" in err and "fix:" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "smoke" / "teacher").exists()
    assert time.monotonic() - start < 60


def test_a_truncated_teacher_is_named_before_any_work(tmp_path, capsys):
    """A pool's teacher whose weights were cut short: the run names the file within seconds and trains nothing
    (it used to surface minutes later as a deep traceback from an actor, or as a hang)."""
    teacher = tmp_path / "teacher"
    assert (
        main(
            [
                "train-teacher",
                str(REPO / "configs" / "toy2d.yaml"),
                "--out",
                str(teacher),
                "--no-progress",
                "--set",
                "teacher.steps=5",
                "--set",
                f"run_dir={tmp_path}",
            ]
        )
        == 0
    )
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    start = time.monotonic()
    code = main(
        [
            "run",
            str(REPO / "configs" / "toy2d.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            f"teachers=[{{name: t, checkpoints: [{teacher}]}}]",
            "--set",
            "student.init=scratch",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{weights}: unreadable, truncated or corrupt" in err and "fix:" in err, err
    assert "Traceback" not in err and time.monotonic() - start < 60
    assert not (tmp_path / "toy2d" / "teacher").exists()


def test_a_cached_teacher_of_another_recipe_is_refused_before_any_work(tmp_path, capsys):
    """``RUN/teacher`` is a cache of the teacher the run trains; reused after ``--set seed=1`` (or ``--overwrite``
    with another seed) it would be the seed-0 teacher, trained on images seed 1 holds out for its FID. The run
    names each setting that changed and trains nothing; a change that does not make another teacher passes."""
    from cluster.teacher_stage import teacher_training_config, train_teachers

    toy = lambda *o: load_config(REPO / "configs" / "toy2d.yaml", [f"run_dir={tmp_path}", "teacher.steps=5", *o])
    cfg = toy()
    train_teachers({str(cfg.teacher_path): teacher_training_config(cfg, cfg.seed)})
    assert input_checks(cfg).checks[-1].ok  # the same recipe: reused
    assert input_checks(toy("teacher.log_every=7")).checks[-1].ok  # not part of the recipe
    with pytest.raises(PreflightError) as err:
        input_checks(toy("teacher.lr=0.01"))
    assert "teacher.lr: 0.002 -> 0.01" in str(err.value), str(err.value)

    # the run finished before (its report says so); --overwrite at another seed is refused and clears nothing
    weights = cfg.teacher_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    report = cfg.run_path / "report.json"
    report.write_text('{"status": "finished"}')
    (cfg.run_path / "student").mkdir()
    code = main(
        ["run", str(REPO / "configs" / "toy2d.yaml"), "--no-progress", "--set", f"run_dir={tmp_path}",
         "--set", "teacher.steps=5", "--set", "seed=1", "--overwrite"]
    )  # fmt: skip
    err_text = capsys.readouterr().err
    assert code == 2 and "trained for another recipe" in err_text, err_text
    assert "seed: 0 -> 1" in err_text and "data.split_seed: 0 -> 1" in err_text and "--set name=" in err_text
    assert "Traceback" not in err_text
    assert weights.stat().st_mtime_ns == before
    assert report.read_text() == '{"status": "finished"}' and (cfg.run_path / "student").is_dir()

    # a teacher trained alone into the run's folder (`train-teacher`, its data with no split seed of its own)
    alone = tmp_path / "alone"
    args = ["--no-progress", "--set", f"run_dir={alone}", "--set", "teacher.steps=5"]
    assert main(["train-teacher", str(REPO / "configs" / "toy2d.yaml"), *args]) == 0
    assert input_checks(toy(f"run_dir={alone}")).checks[-1].ok


def test_doctor_prints_every_check(capsys):
    assert main(["doctor", str(REPO / "configs" / "toy2d.yaml")]) == 0
    out = capsys.readouterr().out
    for name in ("versions", "devices", "ray", "plan", "store", "teachers", "student step"):
        assert f"] {name}:" in out, out
    assert "no problems found" in out


def test_doctor_with_a_bad_config_names_the_key(capsys):
    assert main(["doctor", str(REPO / "configs" / "toy2d.yaml"), "--set", "student.objective=nope"]) == 2
    assert "student.objective" in capsys.readouterr().err


def test_the_store_password_never_reaches_files_or_the_step_process(tmp_path):
    from cluster.config import dump_config, public_config, redact_url
    from cluster.preflight import step_job

    cfg = _cfg(tmp_path, "store.url=redis://alice:s3cret@db.example:6390/2")
    assert redact_url(cfg.store.url) == "redis://alice:***@db.example:6390/2"
    assert (
        redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0" and redact_url("redis://h:1/0") == "redis://h:1/0"
    )
    assert "s3cret" not in dump_config(cfg) and "s3cret" not in public_config(cfg).model_dump_json()
    job = step_job(cfg, (1, 8, 8), "cpu")
    assert "s3cret" not in job.to_json() and "s3cret" not in repr(job)


def test_a_dashboard_address_in_ray_address_is_explained(tmp_path):
    # a fresh process, as a user runs it (this one may hold the tests' shared Ray)
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:8265"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "run",
            str(REPO / "configs" / "smoke.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "dashboard's address" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_a_missing_data_file_is_named_without_a_traceback(tmp_path, capsys):
    start = time.monotonic()
    code = main(
        [
            "run",
            str(REPO / "configs" / "toy2d.yaml"),
            "--no-progress",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "data.name=file",
            "--set",
            f"data.path={tmp_path / 'nowhere.npy'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nowhere.npy" in err and "Traceback" not in err, err
    assert not (tmp_path / "toy2d" / "teacher").exists() and time.monotonic() - start < 60


def test_the_plan_says_when_bf16_on_this_cpu_would_be_emulated(tmp_path):
    from cluster.preflight import plan_check
    from teachers.precision import cpu_has_native_bf16

    old = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
    new = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
    assert cpu_has_native_bf16(old) is False and cpu_has_native_bf16(new) is True
    assert cpu_has_native_bf16("no flags here\n") is None
    cfg = _cfg(tmp_path, "guides.precision=bf16", "student.precision=bf16")
    plan = resolve_device(cfg, 0)
    slow = plan_check(plan, old).detail
    assert "bf16 is emulated" in slow and "set guides.precision, student.precision to fp32" in slow, slow
    assert "emulated" not in plan_check(plan, new).detail
    assert "emulated" not in plan_check(resolve_device(_cfg(tmp_path), 0), old).detail  # fp32: nothing to say


def _unet(path, **class_conditioning):
    diffusers = pytest.importorskip("diffusers")
    diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        **class_conditioning,
    ).save_pretrained(path, safe_serialization=True)
    return f"teachers=[{{name: hf, checkpoints: [{path}], convention: flow_match}}]"


def test_a_diffusers_first_teacher_passes_with_its_phase_and_one_it_cannot_copy_is_refused_before_ray(tmp_path):
    """A diffusers first teacher starts the student (of its architecture) and scores the phase: the input
    checks pass with smoke.yaml's 20-step phase. A class-conditional one cannot carry a flow map's second time
    in its class input: named, with the fix, before Ray starts; a velocity student of it passes."""
    teachers = _unet(tmp_path / "unet")
    assert input_checks(_cfg(tmp_path, teachers)).data_shape == (1, 8, 8)  # smoke.yaml has a 20-step phase
    conditional = _unet(tmp_path / "conditional", num_class_embeds=10)
    with pytest.raises(PreflightError, match=r"student\.init teacher: .*conditional: .*class-conditional") as err:
        input_checks(_cfg(tmp_path, conditional))
    assert "student.objective: velocity or student.init: scratch" in str(err.value)
    assert input_checks(_cfg(tmp_path, conditional, "student.objective=velocity")).data_shape == (1, 8, 8)


def test_a_store_that_would_evict_records_is_refused_with_the_setting(tmp_path, locked_redis):
    import redis

    client = redis.Redis.from_url(locked_redis.url)
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        evicting = store_check(_cfg(tmp_path, f"store.url={locked_redis.url}"))
        assert evicting.ok is False and "maxmemory-policy is allkeys-lru" in evicting.detail, evicting
        assert "noeviction" in evicting.fix
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
    good = store_check(_cfg(tmp_path, f"store.url={locked_redis.url}"))
    assert good.ok and "maxmemory-policy noeviction" in good.detail, good


def test_every_node_is_asked_whether_it_reaches_the_store(ray_cluster, locked_redis):
    from cluster.nodes import store_unreachable

    assert store_unreachable(locked_redis.url) == []
    here = ray_cluster.util.get_node_ip_address()
    assert store_unreachable(f"redis://:s3cret@127.0.0.1:{free_port()}/0", timeout_s=30) == [here]


def test_an_embedded_store_other_hosts_reach_listens_on_the_nodes_address_with_a_password(tmp_path):
    import ray
    import redis

    host = ray.util.get_node_ip_address()
    assert host != "127.0.0.1"
    with pytest.raises(ValueError, match="needs a password"):
        EmbeddedRedis(tmp_path / "open", host=host)
    with EmbeddedRedis(tmp_path / "shared", password="pw", host=host, fsync="no") as server:
        assert server.url.startswith(f"redis://:pw@{host}:")
        client = redis.Redis.from_url(server.url)
        assert client.ping() and client.config_get("protected-mode")["protected-mode"] == "yes"
        client.close()
