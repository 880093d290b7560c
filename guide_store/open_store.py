"""Open a run's guide store: the configured Redis URL, or a private embedded server in the run's folder."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore

__all__ = ["open_run_store"]


@contextmanager
def open_run_store(run: str, redis_dir: str | Path, url: str | None = None, *, must_exist: bool = False,
                   fsync: str = "always", **store_kwargs) -> Iterator[RedisGuideStore]:
    """Yield a ``RedisGuideStore`` for ``run``; with no ``url`` start (and finally stop) an embedded server whose
    data lives in ``redis_dir``. ``must_exist`` refuses to create an empty embedded store (for export/stats)."""
    server = None
    if url is None:
        redis_dir = Path(redis_dir)
        if must_exist and not redis_dir.is_dir():
            raise FileNotFoundError(f"no guide store for run {run!r}: {redis_dir} does not exist "
                                    "(pass --url for a store on a Redis server)")
        server = EmbeddedRedis(redis_dir, fsync=fsync).start()
        url = server.url
    store = RedisGuideStore(url, run, **store_kwargs)
    try:
        yield store
    finally:
        store.close()
        if server is not None:
            server.stop()
