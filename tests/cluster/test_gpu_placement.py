"""The device plan's GPU shares placed by Ray's real scheduler, on logical GPUs (no GPU needed): the teacher
actors start first, then the student ranks; every one of them must be scheduled. Each case runs in its own
process, since a process holds one Ray instance."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, ray
    from cluster.config import parse_config
    from teachers.device_plan import resolve_device
    gpus, replicas, workers = map(int, sys.argv[1:4])
    cfg = parse_config({"name": "p", "data": {"name": "eight_gaussians"}, "teacher": {"network": {"arch": "mlp"}},
                        "teachers": [{"name": "t", "checkpoints": ["self"], "replicas": replicas, "num_cpus": 0}],
                        "guides": {"block_size": 64, "num_samples": 1024},
                        "student": {"workers": workers, "cpus_per_worker": 0}})
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    plan = resolve_device(cfg, ray.cluster_resources()["GPU"])

    @ray.remote(num_cpus=0)
    class Holder:
        def gpu(self):
            return ray.get_gpu_ids()

    actors = [Holder.options(num_gpus=plan.guides.gpus).remote() for _ in range(replicas)]
    ray.get([a.gpu.remote() for a in actors], timeout=60)
    ranks = [Holder.options(num_gpus=plan.student.gpus).remote() for _ in range(plan.student_workers)]
    ids = ray.get([r.gpu.remote() for r in ranks], timeout=60)
    assert len({tuple(i) for i in ids}) == len(ids), ids  # one rank per GPU
    print("PLACED", plan.guides.gpus, plan.student.gpus, ids)
""")


@pytest.mark.slow  # a Ray cluster with fake GPUs, ~9 s
@pytest.mark.parametrize("gpus,replicas,workers", [(2, 3, 2)])  # 3 actors on 2 GPUs: the uneven case
def test_ray_places_every_actor_and_rank(gpus, replicas, workers):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(gpus), str(replicas), str(workers)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0 and "PLACED" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
