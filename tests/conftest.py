"""Shared test set-up: torch threads, a private cache for project-trained helper models, one local Ray."""

import os

import pytest
import torch

# two threads in one test process; one each when pytest-xdist runs two (two threads each on 2 cores made
# torch's spinning threads wait on each other: a 30 s test took 160 s)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(int(os.environ.get("BEZIER_TEST_THREADS", "1" if _WORKERS > 1 else "2")))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    if "BEZIER_DISTILL_CACHE" not in os.environ:
        # one per pytest run, shared by its xdist workers (the folder above each worker's own): the digits
        # classifier is trained once, not once per worker (its files are renamed into place, so two at once
        # are safe)
        root = tmp_path_factory.getbasetemp()
        shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
        os.environ["BEZIER_DISTILL_CACHE"] = str(shared / "cache")
    yield


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for every test that needs it (logical CPUs above the 2 physical ones so
    several one-thread actors can be scheduled)."""
    import ray

    # address="local": never attach to a cluster some other test or user started with `ray start`
    # two custom resources, so placement (teachers[].resources, student.resources_per_worker) can be asked for
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        namespace="bezier-distill-tests",
        resources={"teacher_host": 8, "student_host": 8},
    )
    yield ray
    ray.shutdown()
