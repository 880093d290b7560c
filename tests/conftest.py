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
