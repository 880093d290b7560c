"""Ray is started or joined in one place (``cluster.ray_start.start_ray``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.ray_start import start_ray

ROOT = str(Path(__file__).resolve().parents[2])


def test_an_unknown_target_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown Ray target 'local'; known: \['cluster', 'configured', 'private'\]"):
        start_ray("local")


def test_a_private_ray_ignores_ray_address_and_has_the_cpus_and_namespace_asked():
    """In a process of its own (the tests' shared Ray lives in this one): RAY_ADDRESS names no cluster, yet a
    private Ray starts, with ``num_cpus`` CPUs, in the namespace asked."""
    probe = (
        "import json, ray; from cluster.ray_start import start_ray; "
        "start_ray('private', 'ray-start-test', 1, dashboard=False); "
        "print(json.dumps({'cpus': ray.cluster_resources().get('CPU'), "
        "'namespace': ray.get_runtime_context().namespace})); ray.shutdown()"
    )
    env = {
        **os.environ,
        "RAY_ADDRESS": "127.0.0.1:1",
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"cpus": 1.0, "namespace": "ray-start-test"}
