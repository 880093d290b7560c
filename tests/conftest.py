"""Shared test set-up: one torch thread, a private cache for project-trained helper models."""

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
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             namespace="bezier-distill-tests")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Two pytest-xdist workers (``-n 2 --dist loadgroup`` in pyproject.toml): the long end-to-end tests run one
    after another on one worker while the other takes the rest (two of them at once on 2 cores only slow each
    other down), and the ``alone`` ones last in that group, when the other worker is done: they race a live job
    with CLI calls or faults, and a machine shared with other tests makes them slow enough to lose the race."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    for item in slow:
        item.add_marker(pytest.mark.xdist_group("slow"))
    last = [item for item in slow if item.get_closest_marker("alone")]
    items[:] = [item for item in items if item not in last] + last
