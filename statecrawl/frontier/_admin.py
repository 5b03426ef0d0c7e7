"""The crawl-wide writes of :class:`statecrawl.frontier.store.CrawlStore` that are not a
worker's lease or commit: starting over (``flush``), forgetting a finished crawl's
frontier (``forget_finished``), cancelling, the items' sink and expiry, and deleting
the crawl -- each over every shard of a sharded crawl (:mod:`statecrawl.frontier.shards`).

:class:`CrawlAdmin` is a mixin: it uses the store's client, keys and scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from statecrawl.frontier.batch import reply_text as _text
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.rolling import recent_keys
from statecrawl.frontier.shards import shard_fixed_keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from statecrawl.frontier.shards import Sharding

__all__ = ["CrawlAdmin"]


class CrawlAdmin:
    """Flush, forget, cancel, sink, expiry and delete (module docstring)."""

    client: Redis
    keys: CrawlKeys
    crawl_id: str
    sharding: Sharding | None
    _flush: Any
    _forget: Any
    _record_sink: Any
    _expire_items: Any

    async def exists(self) -> bool:
        return bool(await self.client.exists(self.keys.meta))

    async def flush(self, worker: str, timeout: float) -> int:
        """Delete the crawl's state (not its items or sessions) if no other worker is live
        (heartbeat within *timeout* s), and register *worker*; returns the other live workers."""
        k = self.keys
        shards = int(await self.client.hget(k.meta, "shards") or 1)
        others = int(await self._flush(
            keys=[k.workers, k.fifo, k.zdict, k.meta, k.seq, k.queue, k.reqs, k.leases, k.seen,
                  k.digests, k.bloom, k.stats, k.tokens, k.spider_state, k.hostq, k.ready,
                  k.hosts],
            args=[worker, int(timeout * 1000)]))
        if not others:
            await self._wipe_shards(shards, keep=())
        return others

    async def _wipe_shards(self, shards: int, keep: Sequence[str]) -> None:
        """Delete shards 1..*shards*-1 (their frontier lists too), but their keys named in
        *keep* (``"meta"``, ``"stats"``)."""
        for shard in range(1, shards):
            k = CrawlKeys(self.crawl_id, shard, shards)
            scores = await self.client.zrange(k.fifo, 0, -1)
            doomed = [k.meta, *shard_fixed_keys(k), *(k.fifo_list(_text(s)) for s in scores)]
            kept = {getattr(k, name) for name in keep}
            await self.client.delete(*(key for key in doomed if key not in kept))

    async def forget_finished(self, worker: str, timeout: float) -> str:
        """Delete a finished crawl's dupefilter and frontier remnants, if *worker* is its last;
        ``forgotten``, ``running`` (not finished) or ``others`` (other workers live)."""
        k = self.keys
        outcome = _text(await self._forget(
            keys=[k.meta, k.queue, k.leases, k.workers, k.stats, k.fifo, k.seq, k.reqs, k.tokens,
                  k.seen, k.digests, k.bloom, k.hostq, k.ready],
            args=[worker, int(timeout * 1000)]))
        if outcome == "forgotten" and self.sharding is not None:  # a finished crawl's shards
            await self._wipe_shards(self.sharding.count, keep=("meta", "stats"))
        return outcome

    async def cancel(self) -> bool:
        """Mark the crawl cancelled (each shard too); workers stop taking leases and exit."""
        if not await self.exists():
            return False
        await self.client.hset(self.keys.meta, "state", "cancelled")
        shards = int(await self.client.hget(self.keys.meta, "shards") or 1)
        for shard in range(1, shards):
            k = CrawlKeys(self.crawl_id, shard, shards)
            if await self.client.exists(k.meta):
                await self.client.hset(k.meta, "state", "cancelled")
        return True

    async def record_sink(self, sink: str) -> str:
        """Record *sink* as the crawl's if it has none yet; return the one recorded."""
        return _text(await self._record_sink(keys=[self.keys.meta, self.keys.items], args=[sink]))

    async def expire_items(self, ttl: float) -> bool:
        """Give the items kept in Redis an expiry of *ttl* s if the crawl is finished and they
        have none yet (an API job's own expiry is kept); True if one was set."""
        return bool(await self._expire_items(keys=[self.keys.meta, self.keys.items],
                                             args=[max(1, int(ttl))]))

    async def delete(self) -> None:
        """Remove every key of the crawl (its rolling counters: the last hour's buckets)."""
        now = (await self.client.time())[0]
        shards = int(await self.client.hget(self.keys.meta, "shards") or 1)
        for shard in range(shards):
            k = CrawlKeys(self.crawl_id, shard, shards)
            scores = await self.client.zrange(k.fifo, 0, -1)
            fixed = self.keys.all() if shard == 0 else [k.meta, *shard_fixed_keys(k)]
            await self.client.delete(*fixed, *(k.fifo_list(_text(s)) for s in scores),
                                     *recent_keys(k, now))
        await self.client.srem(CRAWLS_KEY, self.crawl_id)
