"""A crawl's end of life: purge its keys, purge finished crawls after a TTL, count its bytes.

**Purge** (``statecrawl purge``, :func:`purge_crawl`) removes every key of a
crawl -- every key under ``sc:{<id>}:`` (:mod:`statecrawl.frontier.keys`),
the API job's ``sc:{<id>}:job*`` included -- and its membership in the
indexes outside its hash tag (``sc:crawls``, ``sc:api:active:<kind>``,
``sc:api:hooks``), without blocking Redis:

1. ``purge_meta.lua`` deletes ``meta`` (and the job record) first, in one
   atomic step that checks the crawl may go (no live worker, no running API
   job, unless forced). Its epoch is then gone, so a worker still on the
   crawl fails its next lease or commit with ``SCLOST`` and stops
   (``state_lost``) instead of writing into a half-deleted crawl.
2. ``SCAN MATCH sc:\\{<id>\\}:*`` (the id and the braces escaped for the
   glob) finds the rest, ``COUNT`` :data:`SCAN_COUNT` per call; each batch of
   at most :data:`BATCH` keys is measured (``MEMORY USAGE ... SAMPLES 5``,
   pipelined) and unlinked by ``purge_batch.lua``, which deletes nothing if
   the crawl was created again meanwhile (a new meta). ``UNLINK`` frees
   large values in Redis' background thread; no call holds Redis for more
   than one batch.
3. The index memberships go last, so a purge that is interrupted leaves the
   id listed and ``statecrawl purge <id>`` finishes it.

Workers forced off may write a key or two while they stop (a heartbeat, a
last cookie flush): a forced purge waits until no worker of the crawl has
beaten for :data:`QUIET` seconds (at most *wait*), and sweeps once more.

**Finished-crawl TTL** (``STATECRAWL_FINISHED_TTL`` seconds, 0 = keep for
ever, the default). Plain ``EXPIRE`` would be wrong: a finished crawl runs
again when work appears (``mark_running`` in the lease and commit scripts),
and keys would vanish under it, or be created without a TTL. Instead the
finish time is recorded (meta ``finished_at``, dropped when the crawl runs
again) and a lazy sweep (:func:`sweep_finished`) purges crawls whose
``state`` is ``finished`` and whose ``finished_at`` + TTL has passed (Redis
clock), checked again atomically by ``purge_meta.lua`` in ``ttl`` mode: a
crawl that ran again or gained a live worker between the read and the purge
is kept. An API job's crawl is left to expire with its job
(``STATECRAWL_API_JOB_TTL``: the ``expiresAt`` the API announced). Who runs
the sweep, and when: :mod:`statecrawl.frontier.sweep`. Many purged crawls
share one ``SCAN`` of the keyspace.

**Bytes** (:func:`crawl_bytes`): the sum of ``MEMORY USAGE key SAMPLES 5``
over a crawl's keys found by one ``SCAN``, pipelined; at most
:data:`MAX_MEASURED_KEYS` keys are measured per call, beyond which the
figures are lower bounds (``complete`` is False).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.frontier.cluster import scan_nodes
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys, validate_crawl_id
from statecrawl.frontier.store import LIVE_WORKER_WINDOW, script_source

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "API_INDEX_KEYS", "CrawlRunning", "PurgeResult", "UnknownCrawl", "crawl_bytes",
    "crawl_pattern", "purge_crawl", "sweep_finished",
]

#: Indexes outside a crawl's hash tag that may name it (rows of :mod:`statecrawl.frontier.keys`).
API_INDEX_KEYS = ("sc:api:active:crawl", "sc:api:active:batch", "sc:api:hooks")
SCAN_COUNT = 1000  #: keys Redis looks at per SCAN call
BATCH = 500  #: keys unlinked per script call
MAX_MEASURED_KEYS = 200_000  #: keys crawl_bytes measures at most per call
SWEEP_MAX_CRAWLS = 200  #: crawls one sweep purges at most (the next sweep takes the rest)


class CrawlRunning(StatecrawlError):
    """The crawl has a live worker or a running API job: purge it with ``force``."""


class UnknownCrawl(StatecrawlError):
    """Redis has no key of this crawl and does not list it."""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\{}^-!" else c for c in text)


def crawl_pattern(crawl_id: str | None = None) -> str:
    """The SCAN pattern of one crawl's keys (``sc:\\{<id>[}~][:0-9]*``: its own,
    ``sc:{<id>}:...``, and its shards', ``sc:{<id>~<n>}:...``; an id has neither ``}`` nor
    ``~``), or of every crawl's."""
    if crawl_id is None:
        return "sc:\\{*"
    return f"sc:\\{{{_glob_escape(validate_crawl_id(crawl_id))}[}}~][:0-9]*"


def _crawl_of(key: bytes) -> str | None:
    """``sc:{<id>}:...`` -> ``<id>``; None for other keys."""
    end = key.find(b"}:", 4)
    if not key.startswith(b"sc:{") or end < 0:
        return None
    return key[4:end].split(b"~", 1)[0].decode(errors="replace")  # a shard's: its crawl


def _shard_of(key: bytes) -> str:
    """A shard's ``shard`` hash (``sc:{<id>~<s>.<k>}:shard``) from one of its keys; "" for
    a crawl's own keys (shard 0)."""
    end = key.find(b"}:", 4)
    tag = key[4:end]
    return (key[:end + 2] + b"shard").decode(errors="replace") if b"~" in tag else ""


async def _scan(client: Redis, crawl_id: str | None) -> AsyncIterator[list[bytes]]:
    """The keys of *crawl_id* (None: of every crawl), one SCAN reply at a time (a key may
    come twice). On a cluster, SCAN walks one node: every master is walked in turn (a
    sharded crawl's shards are other hash tags, on any master)."""
    pattern = crawl_pattern(crawl_id)
    for node in scan_nodes(client):  # a sharded crawl's shards may be on any master
        cursor = 0
        while True:
            if node is None:
                cursor, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT)
            else:  # a cluster client answers {node name: cursor}, keys
                cursors, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT,
                                                  target_nodes=node)  # type: ignore[call-arg]
                cursor = next(iter(cursors.values()), 0)
            if keys:
                yield keys
            if int(cursor) == 0:
                break


async def _sizes(client: Redis, keys: list[bytes]) -> list[int]:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=5)
        return [int(n or 0) for n in await pipe.execute()]


@dataclass
class PurgeResult:
    """What a purge removed (or, with ``dry_run``, would remove)."""

    crawl_id: str
    state: str = ""  # meta's state before the purge ('' = no meta)
    keys: int = 0
    bytes: int = 0
    live_workers: int = 0
    dry_run: bool = False
    indexes: list[str] = field(default_factory=list)  # global keys that listed it
    samples: list[str] = field(default_factory=list)  # the first keys, for --dry-run
    left: int = 0  # keys still there at the end (a worker wrote them back, or a new crawl)
    recreated: bool = False  # the crawl was created again during the purge: stopped
    job_running: bool = False  # (dry run) its API job runs: refused without force
    epoch: str = field(default="", repr=False)  # meta's epoch before the purge (shards' guard)

    @property
    def refused(self) -> bool:
        """(dry run) A purge without force would be refused."""
        return bool(self.live_workers or self.job_running)


async def _indexes(client: Redis, crawl_id: str) -> list[str]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.sismember(CRAWLS_KEY, crawl_id)
        for key in API_INDEX_KEYS:
            pipe.zscore(key, crawl_id)
        found = await pipe.execute()
    names = (CRAWLS_KEY, *API_INDEX_KEYS)
    return [name for name, hit in zip(names, found) if hit]


async def _drop_indexes(client: Redis, crawl_ids: Collection[str]) -> None:
    if not crawl_ids:
        return
    async with client.pipeline(transaction=False) as pipe:
        pipe.srem(CRAWLS_KEY, *crawl_ids)
        for key in API_INDEX_KEYS:
            pipe.zrem(key, *crawl_ids)
        await pipe.execute()


async def _unlink(client: Redis, results: dict[str, PurgeResult]) -> None:
    """Unlink every key of the crawls in *results* (whose meta is gone), in batches; adds
    to each result's ``keys`` and ``bytes``. One SCAN however many crawls."""
    script = client.register_script(script_source("purge_batch.lua"))
    in_shard = client.register_script(script_source("purge_shard_batch.lua"))
    only = next(iter(results)) if len(results) == 1 else None
    # one batch per hash tag: the crawl's own, and each shard's of a sharded crawl
    pending: dict[tuple[str, str], set[bytes]] = {}

    async def flush(group: tuple[str, str]) -> None:
        batch, pending[group] = sorted(pending.get(group, ())), set()
        cid, shard = group
        result = results[cid]
        if not batch or result.recreated:
            return
        sizes = await _sizes(client, batch)
        if shard:
            n = int(await in_shard(keys=[shard, *batch], args=[result.epoch]))
        else:
            n = int(await script(keys=[CrawlKeys(cid).meta, *batch]))
        if n < 0:
            result.recreated = True
            return
        result.keys += n
        result.bytes += sum(sizes)

    async for keys in _scan(client, only):
        for key in keys:
            cid = _crawl_of(key)
            if cid in results:
                group = (cid, _shard_of(key))
                pending.setdefault(group, set()).add(key)
                if len(pending[group]) >= BATCH:
                    await flush(group)
    for group in list(pending):
        await flush(group)


async def _count_left(client: Redis, crawl_id: str) -> int:
    left: set[bytes] = set()
    async for keys in _scan(client, crawl_id):
        left.update(keys)
    return len(left)


async def purge_crawl(client: Redis, crawl_id: str, *, force: bool = False, dry_run: bool = False,
                      wait: float = 15.0) -> PurgeResult:
    """Remove every key of *crawl_id* and its index memberships (see the module docstring).

    Raises :class:`UnknownCrawl` when there is nothing of it, :class:`CrawlRunning` when it
    has a live worker or a running API job and not *force*. With *dry_run* nothing is
    deleted: the result counts what would be. A forced purge of a crawl with live workers
    waits up to *wait* seconds for them to leave, then sweeps what they wrote meanwhile."""
    k = CrawlKeys(crawl_id)
    result = PurgeResult(crawl_id, dry_run=dry_run, indexes=await _indexes(client, crawl_id))
    live_ms = int(LIVE_WORKER_WINDOW * 1000)
    if dry_run:
        found: set[bytes] = set()
        async for keys in _scan(client, crawl_id):
            found.update(keys)
        if not found and not result.indexes:
            raise UnknownCrawl(f"no crawl {crawl_id!r} in this Redis: no key and no index names it")
        ordered = sorted(found)
        for start in range(0, len(ordered), BATCH):
            result.bytes += sum(await _sizes(client, ordered[start:start + BATCH]))
        result.keys, result.samples = len(ordered), [key.decode(errors="replace") for key in ordered[:20]]
        now_s, now_us = await client.time()
        raw = await client.hget(k.meta, "state")
        result.state = raw.decode(errors="replace") if raw else ""
        result.live_workers = int(await client.zcount(
            k.workers, now_s * 1000 + now_us // 1000 - live_ms, "+inf"))
        result.job_running = await client.hget(k.prefix + "job", "status") == b"scraping"
        return result
    head = [k.meta, k.prefix + "job"]
    sizes = await _sizes(client, [key.encode() for key in head])
    step = client.register_script(script_source("purge_meta.lua"))
    outcome, state, live, epoch = await step(keys=[k.meta, k.workers, k.prefix + "job"],
                                             args=["force" if force else "idle", live_ms, 0])
    outcome, result.state = outcome.decode(), state.decode(errors="replace")
    result.epoch = epoch.decode(errors="replace") if isinstance(epoch, bytes) else str(epoch or "")
    result.live_workers = int(live)
    if outcome == "live":
        raise CrawlRunning(f"crawl {crawl_id!r} is running ({result.live_workers} live worker"
                           f"{'' if result.live_workers == 1 else 's'}, heard from within "
                           f"{LIVE_WORKER_WINDOW:.0f} s): stop it first (statecrawl cancel "
                           f"{crawl_id}), or purge it anyway with --force")
    if outcome == "job_running":
        raise CrawlRunning(f"crawl {crawl_id!r} is a running API job: cancel it first "
                           f"(DELETE /v2/crawl/{crawl_id}), or purge it anyway with --force")
    if outcome == "purged":
        result.keys += sum(1 for n in sizes if n)
        result.bytes += sum(sizes)
    results = {crawl_id: result}
    await _unlink(client, results)
    if outcome == "gone" and result.keys == 0 and not result.indexes:
        raise UnknownCrawl(f"no crawl {crawl_id!r} in this Redis: no key and no index names it")
    if result.live_workers and not result.recreated:
        await _wait_for_workers(client, k, wait)
        await _unlink(client, results)
    if not result.recreated:
        await _drop_indexes(client, [crawl_id])
    result.left = await _count_left(client, crawl_id)
    return result


#: A forced purge is done once no worker of the crawl has beaten for this long (seconds).
QUIET = 1.0


async def _wait_for_workers(client: Redis, k: CrawlKeys, wait: float) -> None:
    """Until the crawl's workers have stopped -- its ``workers`` key, which each heartbeat
    writes again and each leaving worker empties, stayed gone for :data:`QUIET` s --
    at most *wait* s."""
    now = time.monotonic()
    deadline, quiet_since = now + max(0.0, wait), now
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if await client.exists(k.workers):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET:
            return


async def sweep_finished(client: Redis, ttl: float, *, exclude: Iterable[str] = (),
                         dry_run: bool = False) -> list[PurgeResult]:
    """Purge the crawls finished at least *ttl* seconds ago (at most :data:`SWEEP_MAX_CRAWLS`);
    returns what was purged (with *dry_run*: the crawls that would be, nothing deleted)."""
    skip = set(exclude)
    ids = sorted({m.decode(errors="replace") async for m in client.sscan_iter(CRAWLS_KEY, count=1000)}
                 - skip)
    ids = [cid for cid in ids if _valid(cid)]
    now_s, _ = await client.time()
    due: list[str] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        async with client.pipeline(transaction=False) as pipe:
            for cid in chunk:
                pipe.hmget(CrawlKeys(cid).meta, "state", "finished_at")
                pipe.exists(CrawlKeys(cid).prefix + "job")
            replies = await pipe.execute()
        for cid, (state, finished_at), job in zip(chunk, replies[::2], replies[1::2]):
            try:
                old = state == b"finished" and float(finished_at) + ttl <= now_s
            except (TypeError, ValueError):
                continue
            if old and not job:  # an API job's crawl expires with its job
                due.append(cid)
    due = due[:SWEEP_MAX_CRAWLS]
    if dry_run:
        found = [await purge_crawl(client, cid, dry_run=True) for cid in due]
        return [r for r in found if not r.refused]
    step = client.register_script(script_source("purge_meta.lua"))
    results: dict[str, PurgeResult] = {}
    for cid in due:
        k = CrawlKeys(cid)
        sizes = await _sizes(client, [k.meta.encode(), (k.prefix + "job").encode()])
        outcome, _, _, epoch = await step(keys=[k.meta, k.workers, k.prefix + "job"],
                                          args=["ttl", int(LIVE_WORKER_WINDOW * 1000), ttl])
        if outcome == b"purged":  # else it ran again, or a worker joined: kept
            results[cid] = PurgeResult(cid, state="finished", keys=sum(1 for n in sizes if n),
                                       bytes=sum(sizes), epoch=epoch.decode(errors="replace"))
    if results:
        await _unlink(client, results)
        await _drop_indexes(client, [cid for cid, r in results.items() if not r.recreated])
    return list(results.values())


def _valid(crawl_id: str) -> bool:
    try:
        validate_crawl_id(crawl_id)
    except ConfigError:
        return False
    return True


async def crawl_bytes(client: Redis, crawl_id: str | None = None,
                      max_keys: int = MAX_MEASURED_KEYS) -> tuple[dict[str, int], bool]:
    """Bytes per crawl (``MEMORY USAGE key SAMPLES 5`` summed over its keys), for one crawl or
    every crawl in one SCAN; and whether every key was measured (at most *max_keys*)."""
    totals: dict[str, int] = {}
    measured = 0
    seen: set[bytes] = set()
    async for keys in _scan(client, crawl_id):
        fresh = [key for key in keys if key not in seen][:max(0, max_keys - measured)]
        seen.update(fresh)
        for key, size in zip(fresh, await _sizes(client, fresh) if fresh else []):
            cid = _crawl_of(key)
            if cid is not None:
                totals[cid] = totals.get(cid, 0) + size
        measured += len(fresh)
        if measured >= max_keys:
            return totals, False
    return totals, True
