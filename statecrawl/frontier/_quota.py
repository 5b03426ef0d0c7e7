"""A sharded crawl's page limit: admissions granted by shard 0 (:mod:`.shards`).

A crawl's limit counts the requests it admits; a sharded crawl admits them in many
shards, so no one script sees them all. Shard 0 keeps the count granted so far
(``meta.quota_out``, ``lua/quota.lua``), and every commit of a limited crawl asks
it first:

1. *check*: each shard the batch's counted requests go to says how many of them its
   dupefilter has not seen (read only, one call per shard, sent together);
2. *grant*: shard 0 grants up to that many, what the limit has left (``+``);
3. each shard's commit call carries its part of the grant (shards in order, each
   up to its new requests) and admits at most that many (``commit.lua``); what a
   call leaves unused -- a request another worker added between 1 and 3 -- comes
   back in its reply as ``spare``;
4. *give back*: the spare returns to shard 0's count (``-``).

Each step is applied once (its own token; a retry of the batch reuses the grant).
So the crawl never admits more than its limit. It admits fewer only when a worker
dies between steps 2 and 3 (its grant is lost) or 3 and 4 (its spare is), or is
declared dead meanwhile (its tokens go, and a late resend is granted again): at most
one batch's new requests short. A request over its shard's grant is not recorded as
seen (``commit.lua``), so a grant given back can still admit it when it comes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from statecrawl.frontier._lua import script_source
from statecrawl.frontier.batch import PendingRequest
from statecrawl.frontier.keys import CrawlKeys

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from statecrawl.frontier.store import CrawlStore

__all__ = ["ShardQuota"]


class ShardQuota:
    """The grants of one worker's commits to a sharded, limited crawl (module docstring)."""

    def __init__(self, store: CrawlStore, keys: Sequence[CrawlKeys]) -> None:
        self.store, self.keys = store, list(keys)
        self._quota = store.client.register_script(script_source("quota.lua"))
        self._checks: dict[str, AsyncScript] = {}
        self._batch: str | None = None  # the batch whose grant is known
        self._grants: dict[int, int] = {}
        self._given: str | None = None  # the batch whose spare went back

    async def grants(self, worker: str, token: str, dedupe: str,
                     requests: Mapping[int, Sequence[PendingRequest]]) -> dict[int, int]:
        """Each shard's part of the grant for the batch *token* (the same when sent again)."""
        if token == self._batch:
            return self._grants
        shards = sorted(requests)
        new = await asyncio.gather(*(self._new(s, requests[s], dedupe) for s in shards))
        need = sum(new)
        left = await self._call("+", worker, f"{token}.q", need) if need else 0
        grants: dict[int, int] = {}
        for s, n in zip(shards, new):
            grants[s] = min(n, left)
            left -= grants[s]
        self._batch, self._grants = token, grants
        return grants

    async def give_back(self, worker: str, token: str, spare: int) -> None:
        """Return the batch's unused grant to shard 0 (once)."""
        if spare > 0 and self._given != token:
            await self._call("-", worker, f"{token}.r", spare)
            self._given = token

    async def _new(self, shard: int, requests: Sequence[PendingRequest], dedupe: str) -> int:
        """How many of *requests* would count against the limit in *shard* (read only)."""
        counted = [r for r in requests if r.counted]
        checked = [r.fingerprint for r in counted if r.filter]
        if not checked or dedupe == "none":
            return len(counted)
        script = self._checks.get(dedupe)
        if script is None:
            script = self._checks[dedupe] = self.store.client.register_script(script_source(
                "digests.lua", f"dedupe_{dedupe}.lua", "dedupe_check.lua"))
        k = self.keys[shard]
        unseen = int(await script(keys=[k.seen, k.meta], args=["0", *checked]))
        return len(counted) - len(checked) + unseen

    async def _call(self, op: str, worker: str, token: str, n: int) -> int:
        k = self.keys[0]
        return int(await self.store.run_checked(
            self._quota, [k.meta, k.tokens], [op, worker, token, n, self.store.epoch]))
