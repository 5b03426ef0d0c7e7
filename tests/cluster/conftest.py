"""A real local Redis Cluster for the session: 3 masters and 3 replicas.

Six ``redis-server --cluster-enabled yes`` processes (no persistence) on free
ports of 127.0.0.1, in a private temp dir, joined by ``redis-cli --cluster
create --cluster-replicas 1``; ready when every node says ``cluster_state:ok``
and knows all six. Every wait is bounded; every process is stopped after.
A node's cluster bus listens on its port + 10000, so both must be free.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster

from tests.conftest import RedisServer, free_port

NODES = 6
READY_TIMEOUT = 30.0  # seconds the cluster may take to agree on its slots


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """*n* ports, each free with its bus port (+10000) free too, none another's bus port."""
    ports: list[int] = []
    for _ in range(200):
        port = free_port()
        taken = set(ports) | {p + 10000 for p in ports}
        if port + 10000 < 65536 and {port, port + 10000}.isdisjoint(taken) and _bindable(port + 10000):
            ports.append(port)
            if len(ports) == n:
                return ports
    pytest.fail("no free ports for a local Redis Cluster")


@dataclass
class LocalCluster:
    """A running local cluster: its URL (``redis+cluster://`` over the first three nodes)."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3]) + "/"

    def client(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes])

    def masters(self) -> list[str]:
        """The masters' names (``127.0.0.1:<port>``), as redis-py names nodes."""
        with self.client() as client:
            return sorted(node.name for node in client.get_primaries())

    def master_of(self, crawl_id: str) -> str:
        with self.client() as client:
            return str(client.get_node_from_key(f"sc:{{{crawl_id}}}:meta").name)

    def crawl_ids(self, prefix: str = "t") -> list[str]:
        """One fresh crawl id per master, in the order of :meth:`masters`."""
        masters = self.masters()
        found: dict[str, str] = {}
        tag = uuid.uuid4().hex[:8]
        with self.client() as client:
            for i in range(2000):
                crawl_id = f"{prefix}-{tag}-{i}"
                node = client.get_node_from_key(f"sc:{{{crawl_id}}}:meta").name
                found.setdefault(node, crawl_id)
                if len(found) == len(masters):
                    return [found[m] for m in masters]
        raise AssertionError(f"no crawl id for every master: {found}")

    def start(self, root: Path) -> LocalCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is not installed (make install provides it)")
        for port in cluster_ports(NODES):
            home = root / str(port)
            home.mkdir()
            self.nodes.append(RedisServer(port, home, args=(
                "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
                "--cluster-node-timeout", "3000", "--appendonly", "no", "--save", "")).start())
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
                               "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for node in self.nodes:
            client = node.client()
            try:
                while True:
                    raw = client.execute_command("CLUSTER INFO")  # parsed by redis-py: a dict
                    info = {_text(k): _text(v) for k, v in raw.items()}
                    if info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == NODES:
                        break
                    assert time.monotonic() < deadline, f"node {node.port} not ready:\n{info}"
                    time.sleep(0.1)
            finally:
                client.close()
        with self.client() as client:  # and the client sees three masters, each with a replica
            while len(client.get_primaries()) != 3 or len(client.get_replicas()) != 3:
                assert time.monotonic() < deadline, "the cluster has no 3 masters + 3 replicas"
                time.sleep(0.1)
                client.nodes_manager.initialize()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.stop()
            except subprocess.TimeoutExpired:
                node.stop("kill")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster.start(tmp_path_factory.mktemp("cluster"))
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    return redis_cluster.url

