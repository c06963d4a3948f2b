"""A private six-node Redis Cluster (three masters, one replica each) in a temporary directory.

Each node is a ``redis-server --cluster-enabled yes`` process on a free port below 55535
(its cluster bus listens on the port + 10000); ``redis-cli --cluster create`` joins them.
Tests kill a master to force a failover and move a slot between masters.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisCluster", "own_cluster"]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_ports(count: int) -> list[int]:
    """*count* ports below 55535 whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 45000)
        if port not in ports and _port_is_free(port) and _port_is_free(port + 10000):
            ports.append(port)
    return ports


class RedisCluster:
    """Six ``redis-server`` processes in cluster mode; ``url`` is the ``redis+cluster://`` URL of the masters."""

    def __init__(self, directory: Path) -> None:
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is not installed; `apt-get install redis-server` to run these tests")
        self.directory = directory
        self.ports = _free_cluster_ports(6)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._replicas = ("--cluster-replicas", "1", "--cluster-yes")

    @property
    def url(self) -> str:
        """Every node as a startup node: the client finds the masters itself."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start_node(self, port: int) -> None:
        """Start (or restart, as a fresh empty node) the server on *port* and wait until it answers."""
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--cluster-enabled",
                "yes",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-config-file",
                str(self.directory / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.cli(port, "PING", check=False) != "PONG":
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {port}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start the six nodes, make them a cluster with one replica per master, wait for ``cluster_state:ok``."""
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), *self._replicas],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok(self.ports)
        # A replica that has not synced with its master yet would not take over from it.
        deadline = time.monotonic() + 30
        while not all(self._synced(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise AssertionError("the replicas did not sync with their masters in 30 s")
            time.sleep(0.1)

    def _synced(self, port: int) -> bool:
        info = self.cli(port, "INFO", "replication", check=False)
        return "role:master" in info or "master_link_status:up" in info

    def cli(self, port: int, *args: str, check: bool = True) -> str:
        """Run one redis-cli command against the node on *port*; return its output without the newline."""
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
        )
        if check and done.returncode:
            raise AssertionError(f"redis-cli -p {port} {' '.join(args)}: {done.stderr}")
        return done.stdout.strip()

    def wait_ok(self, ports: list[int], timeout: float = 30.0) -> None:
        """Wait until every node on *ports* reports ``cluster_state:ok`` and all agree on three masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO", check=False) for p in ports)
            if ok and all(len(self.masters(p)) == 3 for p in ports):
                return
            time.sleep(0.1)
        raise AssertionError(f"the cluster on {ports} did not reach cluster_state:ok in {timeout} s")

    def masters(self, via: int | None = None) -> list[int]:
        """The ports of the masters that own slots, as node *via* (any live node) sees them."""
        port = via if via is not None else next(iter(self.processes))
        found = []
        for line in self.cli(port, "CLUSTER", "NODES", check=False).splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                found.append(int(fields[1].split("@")[0].split(":")[1]))
        return sorted(found)

    def node_id(self, port: int) -> str:
        """The cluster node id of the server on *port*."""
        return self.cli(port, "CLUSTER", "MYID")

    def owner_of(self, slot: int) -> int:
        """The port of the master that owns *slot* now."""
        live = next(p for p in self.processes)
        for entry in self._slots(live):
            if entry[0] <= slot <= entry[1]:
                return entry[2]
        raise AssertionError(f"no master owns slot {slot}")

    def _slots(self, port: int) -> list[tuple[int, int, int]]:
        ranges = []
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            owner = int(fields[1].split("@")[0].split(":")[1])
            for spec in fields[8:]:
                if spec.startswith("["):
                    continue
                first, _, last = spec.partition("-")
                ranges.append((int(first), int(last or first), owner))
        return ranges

    def kill(self, port: int) -> None:
        """SIGKILL the node on *port*: its replica takes over after the node timeout."""
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def migrate_slot(self, slot: int, target: int) -> None:
        """Move *slot* (with its keys) from its owner to the master on *target*, as ``--cluster reshard`` does."""
        source = self.owner_of(slot)
        if source == target:
            return
        source_id, target_id = self.node_id(source), self.node_id(target)
        self.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        self.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := self.cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            self.cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
        for port in (target, source, *(p for p in self.masters() if p not in (source, target))):
            self.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def stop(self) -> None:
        """Kill every node still running."""
        for port in list(self.processes):
            self.kill(port)


@contextlib.contextmanager
def own_cluster() -> Iterator[RedisCluster]:
    """Run a private cluster for the block; every node is killed and its files removed afterwards.

    Skips where redis-py is older than the cluster backend needs (the lowest-versions CI job).
    """
    found = importlib.metadata.version("redis")
    if tuple(int(part) for part in found.split(".")[:2]) < (8, 0):
        pytest.skip(f"the Redis Cluster backend needs redis-py 8.0 or newer; this is {found}")
    with tempfile.TemporaryDirectory(prefix="wsframe-cluster-") as directory:
        cluster = RedisCluster(Path(directory))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
