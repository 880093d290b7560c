"""Open a run's guide store: the configured Redis URL, or a private embedded server in the run's folder."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore

__all__ = ["run_redis_url", "open_run_store"]


@contextmanager
def run_redis_url(run: str, redis_dir: str | Path, url: str | None = None, *, must_exist: bool = False,
                  fsync: str = "always") -> Iterator[str]:
    """Yield ``url``, or with none the URL of an embedded server (started here, stopped at the end) whose data
    lives in ``redis_dir``. ``must_exist`` refuses to create an empty embedded store (for export/stats)."""
    if url is not None:
        yield url
        return
    redis_dir = Path(redis_dir)
    if must_exist and not redis_dir.is_dir():
        raise FileNotFoundError(f"no guide store for run {run!r}: {redis_dir} does not exist "
                                "(pass --url for a store on a Redis server)")
    with EmbeddedRedis(redis_dir, fsync=fsync) as server:
        yield server.url


@contextmanager
def open_run_store(run: str, redis_dir: str | Path, url: str | None = None, *, must_exist: bool = False,
                   fsync: str = "always", **store_kwargs) -> Iterator[RedisGuideStore]:
    """Yield a ``RedisGuideStore`` for ``run`` at ``url`` or in the run's embedded server (``run_redis_url``)."""
    with run_redis_url(run, redis_dir, url, must_exist=must_exist, fsync=fsync) as resolved:
        store = RedisGuideStore(resolved, run, **store_kwargs)
        try:
            yield store
        finally:
            store.close()
