"""Redis Cluster: its URL form, its clients, and the few calls that differ on a cluster.

**The URL.** ``redis+cluster://[[user]:password@]host:port[,host:port...][/][?option=value...]``,
``rediss+cluster://`` with TLS. The hosts are a seed list: any one reachable
master or replica is enough, the client learns the rest from ``CLUSTER
SLOTS`` and follows ``MOVED``/``ASK`` redirections itself; list several so a
start-up survives one node being down. A port left out is 6379. A path may
only be empty, ``/`` or ``/0`` (a cluster has only database 0); there is no
unix-socket form. Query options are redis-py's (``?socket_timeout=5``...), as
for ``redis://``. A plain ``redis://`` URL pointing at a cluster node stays a
single-node client: it fails with ``MOVED`` on the first key of another node,
so a cluster must be named as one.

**How a URL becomes a client.** :func:`parse_cluster_url` turns the URL
into the ``redis://`` (``rediss://``) URL of its first seed, which redis-py
parses for the credentials and options, and the other seeds, passed as
``startup_nodes``. :func:`cluster_client` builds redis-py's
``RedisCluster`` (sync or asyncio) from that; every client statecrawl opens
goes through :func:`statecrawl.frontier.connection.redis_from_url`, which
calls it for a cluster URL. The sync ``RedisCluster`` connects in its
constructor; its "cannot connect" (``RedisClusterException``, not a
``RedisError``) is raised as a ``redis.ConnectionError``, so callers that
retry outages retry it too.

**What differs on a cluster.** Every key of one crawl has the hash tag
``{<crawl id>}`` (:mod:`statecrawl.frontier.keys`), so a crawl is one slot
and each script, transaction and pipeline over its keys runs on one node as
on a single Redis. What does not: ``SCAN`` walks one node (:func:`scan_nodes`
gives the masters to walk, only the crawl's own for one crawl's pattern);
``INFO``/``TIME``/``PING`` answer for one node (:func:`node_of` names the
crawl's); pub/sub messages (``PUBLISH`` from a script included) reach every
node of the cluster, so a subscriber connects to any one node
(:func:`node_urls` gives each seed's URL, tried in turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import RedisClusterException

__all__ = [
    "CLUSTER_SCHEMES", "ClusterURL", "cluster_client", "is_cluster", "is_cluster_url",
    "node_of", "node_urls", "parse_cluster_url", "scan_nodes",
]

#: Cluster URL scheme -> the scheme of one node's URL.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379
MAX_SEEDS = 64  #: seed nodes one URL may list


@dataclass(frozen=True)
class ClusterURL:
    """A parsed cluster URL: its seeds, and what every node's URL shares."""

    scheme: str  # of one node's URL: redis or rediss
    userinfo: str  # "user:password@" as written (percent-encoded), or ""
    query: str  # "?option=value..." or ""
    nodes: tuple[tuple[str, int], ...]

    def url_of(self, host: str, port: int) -> str:
        """The ``redis://`` (``rediss://``) URL of one node, credentials and options kept."""
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{self.userinfo}{host}:{port}/0{self.query}"

    @property
    def node_url(self) -> str:
        """The first seed's URL (redis-py parses it for credentials and options)."""
        return self.url_of(*self.nodes[0])


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad node {item!r}")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"node {item!r} has no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"node {item!r} has a bad port")
    return host, int(port_text)


def parse_cluster_url(url: str) -> ClusterURL:
    """Split a cluster URL (module docstring); a malformed one is a ``ValueError``."""
    scheme, _, _ = url.partition("://")
    node_scheme = CLUSTER_SCHEMES.get(scheme.lower())
    if node_scheme is None:
        raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    items = [item.strip() for item in hosts.split(",")]
    if not hosts or not all(items):
        raise ValueError("list the seed nodes as host:port[,host:port...]")
    if len(items) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seed nodes")
    nodes = tuple(_host_port(item) for item in items)
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a cluster has only database 0 (path '', '/' or '/0')")
    return ClusterURL(node_scheme, userinfo + at, f"?{parts.query}" if parts.query else "", nodes)


def node_urls(url: str) -> list[str]:
    """The ``redis://`` URL of each seed of a cluster URL (same credentials and options)."""
    parsed = parse_cluster_url(url)
    return [parsed.url_of(host, port) for host, port in parsed.nodes]


def cluster_client(url: str, *, sync: bool, **kwargs: Any) -> Any:
    """redis-py's ``RedisCluster`` (``redis.cluster`` if *sync*, else ``redis.asyncio``) for a
    cluster URL; *kwargs* go to every node's connections. The asyncio client connects on
    its first command; the sync one at once: its failure is a ``redis.ConnectionError``."""
    parsed = parse_cluster_url(url)
    if not sync:
        seeds = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in parsed.nodes[1:]]
        return redis.asyncio.RedisCluster.from_url(parsed.node_url, startup_nodes=seeds, **kwargs)
    sync_seeds = [redis.cluster.ClusterNode(h, p) for h, p in parsed.nodes[1:]]
    try:
        return redis.RedisCluster.from_url(parsed.node_url, startup_nodes=sync_seeds, **kwargs)
    except RedisClusterException as exc:
        raise redis.ConnectionError(str(exc)) from exc


def is_cluster(client: object) -> bool:
    """True if *client* is a Redis Cluster client (sync or asyncio)."""
    return isinstance(client, (redis.RedisCluster, redis.asyncio.RedisCluster))


def node_of(client: Any, key: str) -> Any:
    """The master holding *key* on a cluster client (``target_nodes=`` of a keyless command
    such as INFO or TIME); None on a single Redis."""
    return client.get_node_from_key(key) if is_cluster(client) else None


def scan_nodes(client: Any, key: str | None = None) -> list[Any]:
    """The nodes a SCAN must walk: every master, or only *key*'s master (a pattern within
    one hash tag); ``[None]`` on a single Redis (one walk, no target)."""
    if not is_cluster(client):
        return [None]
    return [client.get_node_from_key(key)] if key is not None else list(client.get_primaries())
