"""One crawl's state in Redis: the operations every worker and the CLI use.

:class:`CrawlStore` is a thin async wrapper over the key schema in
:mod:`statecrawl.frontier.keys`. Each operation that touches more than one key is one
Lua script (``statecrawl/frontier/lua/*.lua``), loaded once and run with EVALSHA, so it
is atomic and costs one round trip however many requests it carries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from statecrawl.exceptions import CrawlStateLost
from statecrawl.frontier.batch import (
    CommitResult,
    PendingItem,
    PendingRequest,
    commit_result,
    error_item,
    error_item_data,
    item_key,
)
from statecrawl.frontier.batch import reply_bytes as _bytes
from statecrawl.frontier.batch import reply_text as _text
from statecrawl.frontier.deadletter import DATA_MAX, DEAD_LETTER_MAX
from statecrawl.frontier.item_codec import load_item
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.replication import ReplicaWait
from statecrawl.frontier.rolling import recent_keys
from statecrawl.frontier.serialize import dumps

__all__ = [
    "DEDUPE_MODES", "CommitResult", "CrawlStore", "Heartbeat", "PendingItem", "PendingRequest",
    "commit_result", "error_item", "error_item_data", "heartbeat_keys", "item_key", "new_token",
    "script_source",  # the commit's values live in statecrawl.frontier.batch
]

#: Dupefilter modes of the commit script (``lua/dedupe_<mode>.lua``); see
#: :mod:`statecrawl.frontier.dupefilter` for ``exact`` and ``bloom``.
DEDUPE_MODES = ("none", "set", "exact", "bloom")

#: ``statecrawl status`` counts workers heard from within this many seconds.
LIVE_WORKER_WINDOW = 15.0


def script_source(*names: str) -> str:
    """The text of ``statecrawl/frontier/lua/<name>``, for each name in turn (a script
    after the snippets it uses)."""
    lua = resources.files("statecrawl.frontier").joinpath("lua")
    return "".join(lua.joinpath(name).read_text() for name in names)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    was_registered: bool  # False: this worker had been declared dead and forgotten
    reclaimed: int  # leases of dead workers put back into the frontier
    dead: list[str]  # the workers declared dead by this call


def new_token() -> str:
    return uuid.uuid4().hex


def heartbeat_keys(k: CrawlKeys) -> list[str]:
    """KEYS of heartbeat.lua and leave.lua (shared with the heartbeat thread's client)."""
    return [k.queue, k.leases, k.workers, k.stats, k.tokens, k.ready, k.hosts]



class CrawlStore:
    """Operations on one crawl's keys. Creating it does no I/O.

    Leases and commits carry the crawl's *epoch*, learnt by :meth:`open_crawl`;
    when Redis no longer has the crawl they raise :class:`CrawlStateLost`.
    """

    def __init__(self, client: Redis, crawl_id: str) -> None:
        self.client = client
        self.keys = CrawlKeys(crawl_id)
        self.crawl_id = crawl_id
        self.epoch: str | None = None
        self.next_due_in: float | None = None  # see lease()
        self.replica_wait: ReplicaWait | None = None  # leases and commits WAIT for replicas
        self._quarantine = client.register_script(
            script_source("dead_letter.lua", "host_done.lua", "quarantine.lua"))
        self._open_crawl = client.register_script(script_source("open_crawl.lua"))
        self._commits: dict[str, AsyncScript] = {}  # one script per dupefilter mode
        self._lease = client.register_script(
            script_source("take_leases.lua", "polite.lua", "lease.lua"))
        self._heartbeat = client.register_script(script_source("host_done.lua", "heartbeat.lua"))
        requeue = script_source("host_done.lua", "requeue_owned.lua")
        self._release = client.register_script(requeue + script_source("release.lua"))
        self._leave = client.register_script(requeue + script_source("leave.lua"))
        self._reconcile = client.register_script(requeue + script_source("reconcile.lua"))
        self._flush = client.register_script(script_source("flush_crawl.lua"))
        self._forget = client.register_script(script_source("forget_finished.lua"))
        self._queued = client.register_script(script_source("take_leases.lua", "queued.lua"))
        self._expire_items = client.register_script(script_source("expire_items.lua"))
        self._record_sink = client.register_script(script_source("record_sink.lua"))

    def _commit_script(self, dedupe: str) -> AsyncScript:
        script = self._commits.get(dedupe)
        if script is None:
            if dedupe not in DEDUPE_MODES:
                raise ValueError(f"unknown dupefilter mode {dedupe!r}")
            source = script_source("digests.lua", f"dedupe_{dedupe}.lua", "take_leases.lua",
                                   "polite.lua", "host_done.lua", "commit.lua")
            script = self._commits[dedupe] = self.client.register_script(source)
        return script

    async def open_crawl(
        self, *, spider: str, start_url: str | None = None, limit: int | None = None,
        args: dict[str, Any] | None = None, expect_epoch: str | None = None,
    ) -> str:
        """Create the crawl's metadata if new; return its state.

        With *expect_epoch* (the epoch of a crawl known to exist, e.g. one the
        CLI created), a crawl that is missing or has another epoch is not
        created again: :class:`CrawlStateLost`.
        """
        k = self.keys
        out = await self.run_checked(self._open_crawl, [k.meta], [
            expect_epoch or "", new_token(), f"{time.time():.3f}", spider, start_url or "",
            dumps(args, "spider arguments") if args else "",
            "" if limit is None else int(limit)])
        state, epoch = (_text(v) for v in out)
        # the set of crawls is another key (another slot on a cluster): not in the script
        await self.client.sadd(CRAWLS_KEY, self.crawl_id)
        self.epoch = epoch
        return state

    def _lost_message(self) -> str:
        return (f"crawl {self.crawl_id!r} is gone from Redis (or was created again) while it "
                "ran: Redis restarted without persistence, was flushed, or the crawl was "
                "deleted. Its queued requests are lost; start it again")

    def _epoch(self) -> str:
        if self.epoch is None:
            raise RuntimeError("CrawlStore.open_crawl() must be called before leasing or committing")
        return self.epoch

    async def run_checked(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that checks the crawl's epoch; SCLOST becomes CrawlStateLost."""
        try:
            if self.replica_wait is not None:
                return await self.replica_wait.run(self.client, script, keys, args)
            return await script(keys=keys, args=args)
        except ResponseError as exc:
            if str(exc).startswith("SCLOST"):
                raise CrawlStateLost(self._lost_message()) from None
            raise

    async def lease(
        self, worker: str, n: int, *, check_finished: bool, token: str | None = None
    ) -> tuple[str, list[tuple[str, bytes]]]:
        """Lease up to *n* requests; returns (crawl state, [(id, json)]).

        Re-sending a lease with the same *token* (after a lost reply) returns
        the same requests instead of leasing more.
        """
        k = self.keys
        out = await self.run_checked(
            self._lease, [k.meta, k.queue, k.reqs, k.leases, k.workers, k.stats, k.tokens,
                          k.hostq, k.ready, k.hosts, k.seq, k.fifo],
            [worker, n, "1" if check_finished else "0", token or new_token(), self._epoch()],
        )
        state, _, due = _text(out[0]).partition(" ")
        # a polite crawl whose hosts all wait: the first is due in this many seconds
        self.next_due_in = int(due) / 1000 if due else None
        pairs = [(_text(out[i]), _bytes(out[i + 1])) for i in range(1, len(out), 2)]
        return state, pairs

    async def commit(
        self, worker: str, *, dedupe: str, requests: Sequence[PendingRequest] = (),
        items: Sequence[PendingItem] = (), acks: Sequence[str] = (), token: str | None = None,
        counters: Mapping[str, int] | None = None, want: int = 0,
    ) -> CommitResult:
        """Enqueue *requests*, store *items*, acknowledge *acks*, then lease up to *want*.

        All in one atomic step. Re-sending the same batch with the same
        *token* is a no-op that returns the first result (the same leases).
        *counters* are added to the crawl's stats hash in the same step.
        """
        script, keys, args = self.commit_call(worker, dedupe=dedupe, requests=requests,
                                              items=items, acks=acks, token=token,
                                              counters=counters, want=want)
        return commit_result(await self.run_checked(script, keys, args))

    def commit_call(
        self, worker: str, *, dedupe: str, requests: Sequence[PendingRequest] = (),
        items: Sequence[PendingItem] = (), acks: Sequence[str] = (), token: str | None = None,
        counters: Mapping[str, int] | None = None, want: int = 0,
    ) -> tuple[AsyncScript, list[str], list[Any]]:
        """The script, keys and arguments of :meth:`commit` (for a caller that pipelines
        it with other commands; :func:`commit_result` reads its reply)."""
        k = self.keys
        counters = counters or {}
        args: list[Any] = [worker, token or new_token(), max(0, want), self._epoch(),
                           len(counters)]
        for name, delta in counters.items():
            args += [name, delta]
        args.append(len(requests))
        for r in requests:
            args += [r.fingerprint, r.flags, r.score, r.body]
        args.append(len(items))
        for it in items:
            args += [it.key, int(it.failed) | (2 if it.in_sink else 0), it.body]
        args.append(len(acks))
        args += acks
        keys = [k.meta, k.seq, k.queue, k.reqs, k.leases, k.seen, k.items, k.failed, k.stats,
                k.tokens, k.hostq, k.ready, k.hosts, k.digests, k.fifo, k.ts]
        return self._commit_script(dedupe), keys, args

    async def max_value_bytes(self) -> int | None:
        """Redis' ``proto-max-bulk-len`` (its largest value), or None where CONFIG is refused."""
        try:
            reply = await self.client.config_get("proto-max-bulk-len")
            return int(str(next(iter(reply.values()))))
        except (RedisError, OSError, ValueError, StopIteration):
            return None  # CONFIG is often disabled on managed Redis

    async def quarantine(self, worker: str, request_id: str, error: str,
                         data: bytes | None = None) -> bool:
        """Move *worker*'s leased request *request_id* to the dead-letter list; False if not its.
        *data* is what the dead letter shows of it (default: the stored value)."""
        k = self.keys
        args = [worker, request_id, error[:1024], DEAD_LETTER_MAX, DATA_MAX]
        if data is not None:
            args.append(data[:DATA_MAX])
        return bool(await self._quarantine(
            keys=[k.leases, k.reqs, k.dead, k.stats, k.ready, k.hosts], args=args))

    async def release(self, worker: str, ids: Sequence[str]) -> int:
        """Give *ids* (leased by *worker*) back to the frontier."""
        if not ids:
            return 0
        k = self.keys
        return int(await self._release(keys=[k.queue, k.leases, k.stats, k.ready, k.hosts],
                                       args=[worker, *ids]))

    async def heartbeat(self, worker: str, timeout: float) -> Heartbeat:
        """Record *worker* as alive and reclaim the leases of workers silent for *timeout* s."""
        k = self.keys
        out = await self._heartbeat(keys=heartbeat_keys(k), args=[worker, int(timeout * 1000)])
        return Heartbeat(bool(out[0]), int(out[1]), [_text(w) for w in out[2:]])

    async def reconcile(self, worker: str, known: Sequence[str]) -> int:
        """Give back every lease of *worker* in Redis that is not in *known*."""
        k = self.keys
        return int(await self._reconcile(keys=[k.queue, k.leases, k.stats, k.ready, k.hosts],
                                         args=[worker, *known]))

    async def leave(self, worker: str) -> int:
        """Forget *worker*, giving back any lease it still holds; returns how many."""
        return int(await self._leave(keys=heartbeat_keys(self.keys), args=[worker]))

    async def flush(self, worker: str, timeout: float) -> int:
        """Delete the crawl's state (not its items or sessions) if no other worker is live
        (heartbeat within *timeout* s), and register *worker*; returns the other live workers."""
        k = self.keys
        return int(await self._flush(
            keys=[k.workers, k.fifo, k.zdict, k.meta, k.seq, k.queue, k.reqs, k.leases, k.seen,
                  k.digests, k.bloom, k.stats, k.tokens, k.spider_state, k.hostq, k.ready,
                  k.hosts],
            args=[worker, int(timeout * 1000)]))

    async def forget_finished(self, worker: str, timeout: float) -> str:
        """Delete a finished crawl's dupefilter and frontier remnants, if *worker* is its last;
        ``forgotten``, ``running`` (not finished) or ``others`` (other workers live)."""
        k = self.keys
        return _text(await self._forget(
            keys=[k.meta, k.queue, k.leases, k.workers, k.stats, k.fifo, k.seq, k.reqs, k.tokens,
                  k.seen, k.digests, k.bloom, k.hostq, k.ready],
            args=[worker, int(timeout * 1000)]))

    async def exists(self) -> bool:
        return bool(await self.client.exists(self.keys.meta))

    async def status(self) -> dict[str, Any]:
        """A snapshot of the crawl, as shown by ``statecrawl status``."""
        k = self.keys
        now_s, now_us = await self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.meta)
            pipe.hlen(k.leases)
            pipe.hlen(k.items)
            pipe.scard(k.failed)
            pipe.scard(k.seen)
            pipe.zcount(k.workers, now_ms - int(LIVE_WORKER_WINDOW * 1000), "+inf")
            pipe.hgetall(k.stats)
            meta, in_flight, done, failed, seen, workers, stats = await pipe.execute()
        queued = await self._queued(keys=[k.queue, k.fifo, k.hostq])
        meta = {a.decode(): b.decode() for a, b in meta.items()}
        return {
            "crawl_id": self.crawl_id,
            "state": meta.get("state", "unknown"),
            "queued": queued,
            "in_flight": in_flight,
            # distinct item keys stored (crawls begun before the counter: the items hash)
            "done": int(stats[b"items"]) if b"items" in stats else done,
            "failed": failed,
            # the exact and bloom layouts count what they record; a pre-0.1 crawl has a SET
            "seen": seen or int(stats.get(b"seen", 0)),
            "workers": workers,
            "start_url": meta.get("start_url"),
            "spider": meta.get("spider"),
            "limit": int(meta.get("limit") or 0),
            "created_at": float(meta["created_at"]) if "created_at" in meta else None,
            "finished_at": float(meta["finished_at"]) if "finished_at" in meta else None,
            "forgotten": "forgotten_at" in meta,
            "stats": {a.decode(): int(b) for a, b in stats.items()},
        }

    async def cancel(self) -> bool:
        """Mark the crawl cancelled; workers stop taking leases and exit."""
        if not await self.exists():
            return False
        await self.client.hset(self.keys.meta, "state", "cancelled")
        return True

    async def iter_items(self, batch: int = 500) -> AsyncIterator[tuple[str, Any]]:
        """Every item kept in Redis as (key, decoded JSON), in no particular order."""
        async for key, raw in self.client.hscan_iter(self.keys.items, count=batch):
            yield key.decode(), load_item(raw)

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
        scores = await self.client.zrange(self.keys.fifo, 0, -1)
        buckets = recent_keys(self.keys, (await self.client.time())[0])
        await self.client.delete(*self.keys.all(), *(self.keys.fifo_list(_text(s)) for s in scores),
                                 *buckets)
        await self.client.srem(CRAWLS_KEY, self.crawl_id)
