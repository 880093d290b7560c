"""Open a run's guide store: the configured Redis URL, or a private embedded server in the run's folder."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from guide_store.embedded import EmbeddedRedis
from guide_store.redis_store import RedisGuideStore

__all__ = ["open_store", "run_redis_url", "open_run_store", "embedded_password", "PASSWORD_FILE"]


PASSWORD_FILE = "password"  # in the embedded server's folder, mode 0600: the store commands read it


def embedded_password(redis_dir: Path) -> str:
    """The run's embedded server password: made once (random) and kept beside its data, readable by its
    owner only; never printed or put in a report."""
    path = redis_dir / PASSWORD_FILE
    if not path.is_file():
        redis_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(24))
    return path.read_text().strip()


def open_store(
    url: str,
    run: str,
    *,
    group: str = "students",
    dtype: str = "float32",
    max_backlog_records: int = 100_000,
    max_backlog_bytes: int = 1 << 30,
    claim_idle_s: float | None = None,
    put_timeout_s: float = 300.0,
    expect_shape: tuple[int, ...] | None = None,
    dead_letter_maxlen: int = 10_000,
    expect_guides: int | None = None,
) -> RedisGuideStore:
    """The guide store of ``run`` on the Redis server at ``url``: the one place a ``RedisGuideStore`` is built.
    The caller closes it. The keywords are the store's (same defaults: a test ties them): ``dtype`` of the
    records a producer puts, its backlog limits and ``put_timeout_s``; a reader's ``expect_shape`` /
    ``expect_guides`` (other layouts are dead-lettered) and ``claim_idle_s``."""
    return RedisGuideStore(
        url,
        run,
        group,
        dtype=dtype,
        max_backlog_records=max_backlog_records,
        max_backlog_bytes=max_backlog_bytes,
        claim_idle_s=claim_idle_s,
        put_timeout_s=put_timeout_s,
        expect_shape=expect_shape,
        dead_letter_maxlen=dead_letter_maxlen,
        expect_guides=expect_guides,
    )


@contextmanager
def run_redis_url(
    run: str,
    redis_dir: str | Path,
    url: str | None = None,
    *,
    must_exist: bool = False,
    fsync: str = "always",
    max_memory_bytes: int | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Yield ``url``, or with none the URL of an embedded server (started here, supervised: restarted on its
    append-only file if it dies, stopped at the end) whose data lives in ``redis_dir``, with the run's
    password and ``max_memory_bytes`` (noeviction), listening on loopback and ``host`` (the address in the URL:
    on several nodes, this node's address the others reach). ``must_exist`` refuses to create an empty
    embedded store (for export/stats)."""
    if url is not None:
        yield url
        return
    redis_dir = Path(redis_dir)
    if must_exist and not redis_dir.is_dir():
        raise FileNotFoundError(
            f"no guide store for run {run!r}: {redis_dir} does not exist (pass --url for a store on a Redis server)"
        )
    with EmbeddedRedis(
        redis_dir, fsync=fsync, password=embedded_password(redis_dir), max_memory_bytes=max_memory_bytes, host=host
    ) as server:
        server.supervise()
        yield server.url


@contextmanager
def open_run_store(
    run: str,
    redis_dir: str | Path,
    url: str | None = None,
    *,
    must_exist: bool = False,
    fsync: str = "always",
    **store_kwargs: Any,
) -> Iterator[RedisGuideStore]:
    """Yield the store of ``run`` (``open_store``, with ``store_kwargs``) at ``url`` or in the run's embedded
    server (``run_redis_url``)."""
    with run_redis_url(run, redis_dir, url, must_exist=must_exist, fsync=fsync) as resolved:
        store = open_store(resolved, run, **store_kwargs)
        try:
            yield store
        finally:
            store.close()
