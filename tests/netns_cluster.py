"""Several Ray hosts on one machine, for tests and the docs: a head and worker nodes, each with its own address.

As root, each worker node gets a network namespace (``ip netns``) joined to the head by a veth pair whose
host end sits on a bridge holding the head's address; every node is started by ``ray start`` with
``--node-ip-address`` and its own ``--temp-dir`` (nodes sharing one on a machine fail to join), and offers a
custom resource naming it (``host_a`` on the head, ``host_b``, ``host_c`` ...), so placement can be asked for;
each worker node also offers one ``student_slot``, a resource only student workers ask for (an elastic student
pool counts the room it may grow into from node totals, which the teacher actors' CPUs would inflate); the head
and ``c`` each offer one ``teacher_spare``, a slot a teacher actor can move between (with the head's taken, an
actor asking for one lands on ``c``, and comes back on the head when ``c`` is lost).
Inside a namespace this machine's hostname resolves to the node's own address (``/etc/netns/NAME/hosts``,
which ``ip netns exec`` mounts over ``/etc/hosts``): gloo, which student ranks on different hosts talk
through, binds the address the hostname resolves to, as on a cluster of real hosts.
Traffic stays on the namespaces' own addresses (``SUBNET``); nothing else on the machine is touched, and
``down`` removes every namespace, link and Ray node it made.

    python tests/netns_cluster.py up [--workers 2] [--cpus 4]     # prints RAY_ADDRESS and the nodes
    python tests/netns_cluster.py down
    python tests/netns_cluster.py kill c | start c                # a host lost (every process in it) / back

Node names are letters: ``a`` is the head (root namespace, on the bridge), ``b``, ``c`` ... the workers.
``BEZIER_NETNS_KEEP_LOGS=DIR`` makes ``down`` copy every node's Ray logs into ``DIR/ray-NODE`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from guide_store.embedded import free_port

__all__ = ["SUBNET", "BRIDGE", "address_of", "up", "down", "kill_host", "start_host", "run_in"]

SUBNET = "10.77.0"  # /24: the head .1, worker b .2, c .3 ...
BRIDGE = "bdbr0"
PREFIX = "bdns-"  # namespaces bdns-b, bdns-c; veth bdns-b-h (bridge side) / bdns-b-n (inside)
STATE = Path(os.environ.get("BEZIER_NETNS_STATE", "/tmp/bezier-netns"))
GCS_PORT = 6390  # the head's GCS port on the bridge address (the namespaces have their own ports)
DASHBOARD_PORT = 8275


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def address_of(node: str) -> str:
    return f"{SUBNET}.{ord(node) - ord('a') + 1}"


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def run_in(node: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """A command inside node's namespace (the head: the root namespace)."""
    prefix = [] if node == "a" else ["ip", "netns", "exec", f"{PREFIX}{node}"]
    return subprocess.run([*prefix, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, **kwargs)


def _ray_env() -> dict:
    # every node must use the same token auth as the head; no usage stats; no drain wait on stop
    return {
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }


def _resources(node: str, cpus: int) -> dict:
    return {
        f"host_{node}": cpus,
        **({} if node == "a" else {"student_slot": 1}),
        **({"teacher_spare": 1} if node in ("a", "c") else {}),
    }


def _start_node(node: str, cpus: int) -> None:
    temp = STATE / f"ray-{node}"
    temp.mkdir(parents=True, exist_ok=True)
    common = [
        f"--node-ip-address={address_of(node)}",
        f"--temp-dir={temp}",
        f"--num-cpus={cpus}",
        f"--resources={json.dumps(_resources(node, cpus))}",
        "--disable-usage-stats",
    ]
    if node == "a":
        # the head shares the machine's network with any other Ray on it: its agents get free ports, not Ray's
        # defaults (a local Ray's dashboard agent on 52365 left this head with "No available agent to submit job")
        ports = {
            flag: free_port()
            for flag in (
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "metrics-export-port",
                "ray-client-server-port",
            )
        }
        args = [
            _ray(),
            "start",
            "--head",
            f"--port={GCS_PORT}",
            f"--dashboard-host={address_of('a')}",
            f"--dashboard-port={DASHBOARD_PORT}",
            "--include-dashboard=true",
            *(f"--{flag}={port}" for flag, port in ports.items()),
            *common,
        ]
    else:
        args = [_ray(), "start", f"--address={address_of('a')}:{GCS_PORT}", *common]
    out = run_in(node, *args, env=_ray_env(), timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"ray start on host {node} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def up(workers: int = 2, cpus: int = 4) -> dict:
    """Build the bridge, the namespaces and their links, then a Ray node in each; returns what a client needs."""
    if os.geteuid() != 0:
        raise PermissionError("network namespaces need root")
    down()
    STATE.mkdir(parents=True, exist_ok=True)
    _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    _sh("ip", "addr", "add", f"{address_of('a')}/24", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    nodes = ["a"] + [chr(ord("b") + i) for i in range(workers)]
    for node in nodes[1:]:
        ns, host_end, inner = f"{PREFIX}{node}", f"{PREFIX}{node}-h", f"{PREFIX}{node}-n"
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner)
        _sh("ip", "link", "set", inner, "netns", ns)
        _sh("ip", "link", "set", host_end, "master", BRIDGE)
        _sh("ip", "link", "set", host_end, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address_of(node)}/24", "dev", inner)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{address_of(node)} {socket.gethostname()}\n")
    for node in nodes:
        _start_node(node, cpus)
    info = {
        "address": f"{address_of('a')}:{GCS_PORT}",
        "dashboard": f"http://{address_of('a')}:{DASHBOARD_PORT}",
        "nodes": {n: address_of(n) for n in nodes},
        "cpus": cpus,
    }
    (STATE / "cluster.json").write_text(json.dumps(info))
    return info


def kill_host(node: str) -> None:
    """Everything in the host's namespace SIGKILLed: a host lost (its raylet, actors and workers)."""
    pids = _sh("ip", "netns", "pids", f"{PREFIX}{node}", check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_host(node: str) -> None:
    """The host back: a fresh Ray node in its namespace."""
    info = json.loads((STATE / "cluster.json").read_text())
    shutil.rmtree(STATE / f"ray-{node}", ignore_errors=True)
    _start_node(node, info["cpus"])


def down() -> None:
    """Stop every Ray node this made and remove its namespaces, links and bridge (what exists of them)."""
    namespaces = [n for n in _sh("ip", "netns", "list", check=False).stdout.split() if n.startswith(PREFIX)]
    for ns in namespaces:
        kill_host(ns[len(PREFIX) :])
        deadline = time.monotonic() + 10  # the namespace and its veth live on while a process is in it
        while _sh("ip", "netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.1)
        _sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(PREFIX):  # a host end whose namespace went away late
            _sh("ip", "link", "delete", name, check=False)
    # not `ray stop`, which stops every Ray on the machine: only the head's processes, named by its temp dir or
    # its GCS address (its workers end with its raylet)
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ours = str(STATE / "ray-a") in cmdline or f"--address={address_of('a')}:{GCS_PORT}" in cmdline
            if proc.name.isdigit() and ours:  # the head's processes, its Ray client server among them
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    _sh("ip", "link", "delete", BRIDGE, check=False)
    keep = os.environ.get("BEZIER_NETNS_KEEP_LOGS")  # a folder: every node's Ray logs are copied there first
    if keep:
        for logs in STATE.glob("ray-*/session_latest/logs"):
            shutil.copytree(logs, Path(keep) / logs.parts[-3], dirs_exist_ok=True)
    shutil.rmtree(STATE, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus", type=int, default=4)
    sub.add_parser("down")
    for name in ("kill", "start"):
        sub.add_parser(name).add_argument("node")
    args = parser.parse_args(argv)
    if args.cmd == "up":
        info = up(args.workers, args.cpus)
        print(json.dumps(info, indent=2))
        print(f"export RAY_ADDRESS={info['address']} RAY_AUTH_MODE=token")
    elif args.cmd == "down":
        down()
    elif args.cmd == "kill":
        kill_host(args.node)
    else:
        start_host(args.node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
