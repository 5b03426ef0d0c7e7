"""One crawl's state in Redis: the operations every worker and the CLI use.

:class:`CrawlStore` is a thin async wrapper over the key schema in
:mod:`statecrawl.frontier.keys`. Each operation that touches more than one key is one
Lua script (``statecrawl/frontier/lua/*.lua``), loaded once and run with EVALSHA, so it
is atomic and costs one round trip however many requests it carries.

A request's life: the commit script checks its fingerprint against the crawl's
dupefilter (``digests``, ``bloom`` or ``seen``, as ``meta.dupefilter`` says) and appends
it to its score's ``fifo`` list (one atomic step per batch); the lease script pops it,
gives it an id and stores it in ``reqs`` + ``leases`` (a polite crawl's lease first sorts
it into ``hostq``); a request given back goes to ``queue`` by id; the commit script that
carries the request's callback output (new requests and items) also deletes the lease and
the ``reqs`` entry, in that order, atomically. A request whose worker dies stays in
``leases`` under that worker's id; putting such leases back into ``queue`` needs only the
worker id (issue 3: reclaim).
The crawl is finished when ``fifo``, ``queue``, ``leases`` (and ``hostq``) are empty.
A sharded crawl (:mod:`statecrawl.frontier.shards`) runs the same scripts on each
shard's keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from statecrawl.exceptions import ConfigError, CrawlStateLost
from statecrawl.frontier._admin import CrawlAdmin
from statecrawl.frontier._lua import script_source
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
from statecrawl.frontier.shards import Sharding, group_by_shard, split_id
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



class CrawlStore(CrawlAdmin):
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
        self.sharding: Sharding | None = None  # a crawl of several shards (shards.py)
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
        self._status = client.register_script(script_source("take_leases.lua", "status.lua"))
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
        args: dict[str, Any] | None = None, expect_epoch: str | None = None, shards: int = 1,
        shard_by_host: bool = False,
    ) -> str:
        """Create the crawl's metadata if new; return its state.

        With *expect_epoch* (the epoch of a crawl known to exist, e.g. one the
        CLI created), a crawl that is missing or has another epoch is not
        created again: :class:`CrawlStateLost`. *shards* and *shard_by_host* apply
        to a new crawl only (:mod:`statecrawl.frontier.shards`); :attr:`sharding` is
        set for a crawl that has more than one.
        """
        k = self.keys
        try:
            out = await self.run_checked(self._open_crawl, [k.meta], [
                expect_epoch or "", new_token(), f"{time.time():.3f}", spider, start_url or "",
                dumps(args, "spider arguments") if args else "",
                "" if limit is None else int(limit), shards, "host" if shard_by_host else ""])
        except ResponseError as exc:
            if str(exc).startswith("SCSHARDS"):
                raise ConfigError(f"crawl {self.crawl_id!r}: {str(exc)[9:]}") from None
            raise
        state, epoch = _text(out[0]), _text(out[1])
        # the set of crawls is another key (another slot on a cluster): not in the script
        await self.client.sadd(CRAWLS_KEY, self.crawl_id)
        self.epoch = epoch
        count = int(out[2] or 1)
        if count > 1:
            self.keys = CrawlKeys(self.crawl_id, 0, count)  # its shards' names (_slots)
            self.sharding = Sharding(self, count, by_host=_text(out[4] or b"") == "host",
                                     limit=int(out[5] or 0))
            await self.sharding.open(create=not out[3])
            if not out[3]:
                await self.client.hset(k.meta, "shards_ready", 1)
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
        if self.sharding is not None:
            self.next_due_in = None
            return await self.sharding.lease(worker, n, check_finished=check_finished,
                                             token=token or new_token())
        return await self.lease_on(self.keys, worker, n, check_finished=check_finished, token=token)

    async def lease_on(
        self, k: CrawlKeys, worker: str, n: int, *, check_finished: bool, token: str | None = None
    ) -> tuple[str, list[tuple[str, bytes]]]:
        """:meth:`lease` from the keys *k* (the crawl's, or one shard's)."""
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
        if self.sharding is not None:
            return await self.sharding.commit(
                worker, dedupe=dedupe, requests=requests, items=items, acks=acks,
                token=token or new_token(), counters=dict(counters or {}), want=want)
        return await self.commit_on(self.keys, worker, dedupe=dedupe, requests=requests,
                                    items=items, acks=acks, token=token, counters=counters,
                                    want=want)

    async def commit_on(self, k: CrawlKeys, worker: str, **batch: Any) -> CommitResult:
        """:meth:`commit` on the keys *k* (the crawl's, or one shard's): one script call."""
        script, keys, args = self.commit_call(worker, keys_of=k, **batch)
        return commit_result(await self.run_checked(script, keys, args))

    def commit_call(
        self, worker: str, *, dedupe: str, requests: Sequence[PendingRequest] = (),
        items: Sequence[PendingItem] = (), acks: Sequence[str] = (), token: str | None = None,
        counters: Mapping[str, int] | None = None, want: int = 0, keys_of: CrawlKeys | None = None,
        grant: int | None = None,
    ) -> tuple[AsyncScript, list[str], list[Any]]:
        """The script, keys and arguments of :meth:`commit` on one slot (for a caller that
        pipelines it with other commands; :func:`commit_result` reads its reply)."""
        k = keys_of or self.keys
        counters = counters or {}
        args: list[Any] = [worker, token or new_token(), max(0, want), self._epoch(),
                           "" if grant is None else grant, len(counters)]
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
        shard, raw_id = split_id(request_id)  # a shard's dead letters are in its own list
        k = self.keys.of_shard(shard)
        args = [worker, raw_id, error[:1024], DEAD_LETTER_MAX, DATA_MAX]
        if data is not None:
            args.append(data[:DATA_MAX])
        return bool(await self._quarantine(
            keys=[k.leases, k.reqs, k.dead, k.stats, k.ready, k.hosts], args=args))

    async def release(self, worker: str, ids: Sequence[str]) -> int:
        """Give *ids* (leased by *worker*) back to the frontier."""
        if not ids:
            return 0
        released = 0
        for shard, raw_ids in group_by_shard(ids).items():
            k = self.keys.of_shard(shard)
            released += int(await self._release(keys=[k.queue, k.leases, k.stats, k.ready, k.hosts],
                                                args=[worker, *raw_ids]))
        return released

    async def heartbeat(self, worker: str, timeout: float) -> Heartbeat:
        """Record *worker* as alive and reclaim the leases of workers silent for *timeout* s."""
        k = self.keys
        out = await self._heartbeat(keys=heartbeat_keys(k), args=[worker, int(timeout * 1000)])
        return Heartbeat(bool(out[0]), int(out[1]), [_text(w) for w in out[2:]])

    async def reconcile(self, worker: str, known: Sequence[str]) -> int:
        """Give back every lease of *worker* in Redis that is not in *known*."""
        if self.sharding is not None:
            return await self.sharding.reconcile(worker, known)
        return await self.reconcile_on(self.keys, worker, known)

    async def reconcile_on(self, k: CrawlKeys, worker: str, known: Sequence[str]) -> int:
        return int(await self._reconcile(keys=[k.queue, k.leases, k.stats, k.ready, k.hosts],
                                         args=[worker, *known]))

    async def leave(self, worker: str) -> int:
        """Forget *worker*, giving back any lease it still holds; returns how many."""
        if self.sharding is not None:
            return await self.sharding.leave(worker)
        return await self.leave_on(self.keys, worker)

    async def leave_on(self, k: CrawlKeys, worker: str) -> int:
        return int(await self._leave(keys=heartbeat_keys(k), args=[worker]))

    async def status(self) -> dict[str, Any]:
        """A snapshot of the crawl, as shown by ``statecrawl status``."""
        k = self.keys
        out = await self._status(
            keys=[k.meta, k.leases, k.items, k.failed, k.seen, k.workers, k.stats, k.queue,
                  k.fifo, k.hostq], args=[int(LIVE_WORKER_WINDOW * 1000)])
        in_flight, done, failed, seen, workers, queued = (int(out[i]) for i in (1, 2, 3, 4, 5, 7))
        meta = {_text(a): _text(b) for a, b in zip(out[0][::2], out[0][1::2])}
        stats = {_bytes(a): int(b) for a, b in zip(out[6][::2], out[6][1::2])}
        shards = int(meta.get("shards") or 1)
        if shards > 1:  # the other shards' frontier, leases and counters
            more_queued, more_leases, more_stats = await Sharding(self, shards).totals()
            queued, in_flight = queued + more_queued, in_flight + more_leases
            for name, value in more_stats.items():
                name_b = name.encode()
                stats[name_b] = int(stats.get(name_b, 0)) + value
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
            "shards": shards,
            "stats": {a.decode(): int(b) for a, b in stats.items()},
        }

    async def queued_on(self, k: CrawlKeys) -> int:
        """Requests queued in the keys *k* (the crawl's, or one shard's)."""
        return int(await self._queued(keys=[k.queue, k.fifo, k.hostq]))

    async def iter_items(self, batch: int = 500) -> AsyncIterator[tuple[str, Any]]:
        """Every item kept in Redis as (key, decoded JSON), in no particular order."""
        async for key, raw in self.client.hscan_iter(self.keys.items, count=batch):
            yield key.decode(), load_item(raw)
