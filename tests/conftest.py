"""Shared test set-up: one torch thread, a private cache for project-trained helper models."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BEZIER_TEST_THREADS", "2")))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    if "BEZIER_DISTILL_CACHE" not in os.environ:
        os.environ["BEZIER_DISTILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
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
