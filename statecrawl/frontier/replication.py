"""Waiting for replicas: leases and commits that outlive a failover.

Redis replicates asynchronously: a master answers a write before its replicas have
it, so a master that dies can take its last writes with it when a replica is
promoted (Redis Cluster, Sentinel, a cloud service's failover alike). With
``STATECRAWL_REDIS_WAIT_REPLICAS`` = *n* > 0, every lease and commit a worker makes
is followed by ``WAIT n timeout`` on the same connection, and the worker uses the
answer (fetches the leased requests, forgets the committed output) only after it.

**Why that is enough.** A master's replication stream is one ordered log: when a
replica has a client's last write it has every write the master made before it,
other workers' included. A worker acts only on results that were confirmed this
way, so the promoted replica holds everything any worker acted on. Writes that were
not confirmed yet belong to calls still waiting (their workers have not acted on
them); if the master dies, those calls fail, are retried with the same token on the
new master (applied once: :mod:`statecrawl.frontier.store`), and each worker that
saw the outage reconciles its leases. A replayed call (the token was already
recorded) writes its token again, so that its ``WAIT`` covers it on any version of
Redis: ``WAIT`` counts replicas up to the last write of its connection, and a
replay on a new connection would have none (Redis 7.0 then waits for the master's
whole log anyway, seen in tests/frontier/test_replication.py; the write makes it
so whatever the version).

**What can be lost without it** (the default): the writes of the last moments
before the master died, as a whole suffix of its log, and with them

* the ids of leases: the promoted replica hands the same request ids out again
  (``sc:{id}:seq`` went back), and a worker still holding a lost lease of id *X*
  can acknowledge the new request *X*, which is then never fetched: **a page
  lost**. This is the one loss;
* commits: their new links, items and acknowledgements come back as they were, so
  the acknowledged pages are leased (or queued) again and fetched a second time
  (their items replace the first by key: stored once; a directory or S3 sink has
  the page's record written twice, ``items`` counts it once);
* releases, quarantines and reclaims: done again (a worker that saw the outage
  reconciles its leases; heartbeats reclaim again).

**How.** The script's ``EVALSHA`` and the ``WAIT`` go in one pipeline (``WAIT``
counts the replicas that have the last write of *its own connection*). On a
cluster the pipeline goes to a plain client of the master holding the crawl's slot
(redis-py's cluster pipeline neither runs scripts by SHA nor sends ``WAIT`` to a
chosen node); a redirect after a failover (``MOVED``, a refused connection,
``READONLY`` from a master that came back as a replica) refreshes the slot map and
is retried as an outage.

**A replica short.** ``WAIT`` answering fewer than *n* replicas after
``STATECRAWL_REDIS_WAIT_TIMEOUT`` seconds leaves the write applied on the master;
the worker goes on (a crawl does not stop because a replica is down), counts
``statecrawl/redis_wait_short`` and logs a warning at most once a minute. To have
writes refused instead while replicas are missing, set ``min-replicas-to-write``
on the masters: workers wait ``NOREPLICAS`` out like any outage.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.cluster import is_cluster

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript
    from scrapy.settings import BaseSettings
    from scrapy.statscollectors import StatsCollector

__all__ = ["DEFAULT_WAIT_TIMEOUT", "ReplicaWait"]

logger = logging.getLogger(__name__)

#: Default of ``STATECRAWL_REDIS_WAIT_TIMEOUT`` (s).
DEFAULT_WAIT_TIMEOUT = 1.0
_WARN_EVERY = 60.0  # s between two "replica short" warnings
_RESHAPED = (MovedError, AskError, ConnectionError, TimeoutError, ReadOnlyError,
             ClusterDownError, TryAgainError, OSError)  # the slot's master may have changed


class ReplicaWait:
    """Runs a script, then ``WAIT``s for *replicas* replicas (module docstring)."""

    def __init__(self, replicas: int, timeout: float,
                 stats: StatsCollector | None = None) -> None:
        if replicas < 1:
            raise ConfigError("STATECRAWL_REDIS_WAIT_REPLICAS must be 1 or more to wait")
        if not timeout > 0:
            raise ConfigError(f"STATECRAWL_REDIS_WAIT_TIMEOUT must be over 0 s, not {timeout}")
        self.replicas, self.timeout, self.stats = replicas, timeout, stats
        self.waits = 0  # WAITs answered
        self.short = 0  # of those, answered with fewer replicas than asked
        self._nodes: dict[str, redis.asyncio.Redis] = {}  # cluster: master name -> client
        self._warned_at = -_WARN_EVERY

    @classmethod
    def from_settings(cls, settings: BaseSettings,
                      stats: StatsCollector | None = None) -> ReplicaWait | None:
        """The policy the settings ask for; None when ``STATECRAWL_REDIS_WAIT_REPLICAS`` is 0."""
        try:
            replicas = settings.getint("STATECRAWL_REDIS_WAIT_REPLICAS", 0)
            timeout = settings.getfloat("STATECRAWL_REDIS_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT)
        except ValueError as exc:
            raise ConfigError(f"STATECRAWL_REDIS_WAIT_REPLICAS / _TIMEOUT: {exc}") from None
        if replicas < 0:
            raise ConfigError(f"STATECRAWL_REDIS_WAIT_REPLICAS must be 0 or more, not {replicas}")
        return cls(replicas, timeout, stats) if replicas else None

    async def run(self, client: Any, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """*script*'s reply, once ``WAIT`` has answered (a short answer is counted, not raised)."""
        try:
            target = await self._target(client, keys[0])
            reply, acked = await self._send(target, script, keys, args)
        except _RESHAPED as exc:
            if is_cluster(client):
                await self._refresh(client)
                if isinstance(exc, (MovedError, AskError)):  # not an outage word to redis-py
                    raise TryAgainError(f"TRYAGAIN the crawl's slot moved: {exc}") from exc
            raise
        self._count(int(acked))
        return reply

    async def _send(self, target: Any, script: AsyncScript, keys: list[str],
                    args: list[Any]) -> tuple[Any, Any]:
        for attempt in (1, 2):
            async with target.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.replicas, max(1, int(self.timeout * 1000)))
                reply, acked = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 1:
                await target.script_load(script.script)  # a new or restarted master
                continue
            for result in (reply, acked):
                if isinstance(result, BaseException):
                    raise result
            return reply, acked
        raise AssertionError("unreachable")

    async def _target(self, client: Any, key: str) -> Any:
        """The client to pipeline on: *client* itself, or on a cluster the slot's master's."""
        if not is_cluster(client):
            return client
        await client.initialize()  # a no-op once the client has its slot map
        try:
            node = client.get_node_from_key(key)
        except SlotNotCoveredError as exc:  # the map is being rebuilt (a failover)
            raise ClusterDownError(f"CLUSTERDOWN no master for the crawl's slot: {exc}") from exc
        target = self._nodes.get(node.name)
        if target is None:
            kwargs = {k: v for k, v in node.connection_kwargs.items() if k not in ("host", "port")}
            pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class,
                                                host=node.host, port=node.port, **kwargs)
            target = self._nodes[node.name] = redis.asyncio.Redis(connection_pool=pool)
        return target

    async def _refresh(self, client: Any) -> None:
        """Forget the node clients and re-read the cluster's slot map (best effort: a
        failover in progress may not answer yet; the caller retries)."""
        nodes, self._nodes = self._nodes, {}
        for target in nodes.values():
            await target.aclose()
        try:
            await client.nodes_manager.initialize()
        except (RedisError, OSError) as exc:
            logger.debug("statecrawl: cannot re-read the cluster's slots yet: %s", exc)

    def _count(self, acked: int) -> None:
        self.waits += 1
        if acked >= self.replicas:
            return
        self.short += 1
        if self.stats is not None:
            self.stats.inc_value("statecrawl/redis_wait_short")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning(
                "statecrawl: only %d of %d replicas confirmed a write within %.1fs "
                "(STATECRAWL_REDIS_WAIT_TIMEOUT); the crawl goes on, but a failover now could "
                "lose that write (%d short of %d waits so far)",
                acked, self.replicas, self.timeout, self.short, self.waits)

    async def aclose(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for target in nodes.values():
            await target.aclose()
