"""One crawl over several Redis slots: virtual shards (``STATECRAWL_SHARDS``).

A crawl's keys share one hash tag, so on a Redis Cluster the whole crawl is one
slot on one master. A crawl created with ``STATECRAWL_SHARDS`` = *n* > 1 splits its
frontier and dupefilter over *n* shards, each a hash tag of its own:

* shard 0 is the crawl's own prefix ``sc:{<id>}:``, laid out as an unsharded crawl
  (``meta``, items, sessions, spider state, jobs: everything crawl-wide stays here);
* shard *s* > 0 is ``sc:{<id>~<s>.<k>}:`` (the tag on the *s*-th slice of the slots:
  :mod:`statecrawl.frontier._slots`) with the per-shard keys only -- ``fifo`` (+ its
  lists), ``queue``, ``reqs``, ``leases``, ``seq``, ``digests``, ``stats``,
  ``tokens``, ``workers``, ``ts:<bucket>`` -- and a ``shard`` hash holding the
  crawl's ``epoch`` and ``state`` (so its scripts check the epoch and see a cancel
  without another slot).

A request goes to shard ``int(fp[16:20]) % n`` of its 20-byte fingerprint *fp* (the
dupefilter's bucket uses bytes 0-9, so each shard's buckets stay uniform): its
duplicate check, its place in the frontier and its lease are all in that shard, so
every script still runs in one slot, unchanged. A lease id of shard *s* > 0 reads
``<s>:<id>``; shard 0's ids are bare, as before. The count is fixed when the crawl
is created (``meta.shards``; crawls of earlier versions have none: 1 shard, the
same layout as ever).

**A polite crawl** (:mod:`statecrawl.frontier.hosts`) is sharded **by host** instead:
a request goes to shard ``int(sha1(host)[16:20]) % n`` of its URL's hostname, so a
host's queue (``hostq``), its place in ``ready`` and its budget (``hosts``) are in
the shard that leases its requests, and every politeness script still runs in one
slot. A URL always has the same host, so its duplicates still meet in one shard. The
way is fixed when the crawl is created (``meta.shard_by`` = ``host``: its first
worker had a politeness budget); a crawl sharded by fingerprint cannot be made polite
later (a host's requests are in every shard), and is refused with a clear error. The
crawl-wide budget (``*|...`` fields) is copied into every shard by the first worker
(shard 0's values, so two first workers cannot leave two budgets). The catch: one
host's requests are one shard's, so a crawl of a single site is not spread.

**A page limit** is counted by shard 0: each commit of a limited crawl is granted its
admissions there first, and gives back what it did not use (:mod:`._quota`). A
sharded crawl's limit can change but not appear or go (the workers' commits ask for
grants only when it has one). **A Bloom dupefilter** is a filter per shard, each
sized for its share of the capacity (:mod:`.dupefilter`).

**A commit** (a batch of pages' new requests, items and acknowledgements) touching
one shard is one script call, as before (a limited crawl's grant comes first).
Touching several, it is two phases, each one call per shard, sent together: first
every shard's new requests (and, in shard 0, the items and counters), then every
shard's acknowledgements (with the lease of more requests, on one of them). Each
call is atomic and applied at most once (its own token, derived from the batch's; a
retry resends only the calls not yet confirmed, each the last one of that worker in
its shard, so the shard's replay record still catches it).

*Exactly once, the proof.* A page's lease is deleted only by its acknowledgement,
sent in phase 2, after phase 1 confirmed every one of the batch's outputs in every
shard. A worker that dies before its phase 2 leaves the lease in place: the page
is reclaimed and fetched again, and its outputs, already stored, come again as
duplicates (the dupefilter drops its requests; its item replaces itself by key).
A worker that dies during phase 2 leaves some acknowledgements unapplied: the
same. No acknowledgement is ever applied before its page's outputs are stored, so
no output is lost; none is stored twice, because each call is applied once and
outputs are idempotent across calls. This is the argument of the unsharded
commit (a request is acknowledged in the same batch as its output, or a later
one), with "the same call" widened to "an earlier phase".

**A lease** asks the shards in turn, from where the last one found work, until
one gives requests (each shard's own token, so a lost reply is replayed).

**The end of the crawl.** With every shard found empty, the crawl is finished if a
second pass finds every shard empty again with the same count of requests ever
enqueued: no shard changed between its two reads, so at a moment between the
passes no shard held any work or lease, and no worker holds output without a
lease. Then ``meta.state`` becomes ``finished``.

**Dead workers.** Heartbeats stay in shard 0; a dead worker's leases there are
reclaimed as before. Each worker's heartbeat thread also sweeps shards 1..n-1
every ``STATECRAWL_WORKER_TIMEOUT`` / 2 (``sweep_orphans.lua``): leases of workers
no longer in shard 0's ``workers`` go back to their shard's frontier.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from statecrawl.exceptions import ConfigError
from statecrawl.frontier._lua import script_source
from statecrawl.frontier._quota import ShardQuota
from statecrawl.frontier.batch import CommitResult, PendingItem, PendingRequest
from statecrawl.frontier.keys import MAX_SHARDS, CrawlKeys

if TYPE_CHECKING:
    from statecrawl.frontier.store import CrawlStore

__all__ = ["Sharding", "check_sharded", "group_by_shard", "not_by_host", "shard_count",
           "shard_fixed_keys", "shard_of", "shard_of_host", "split_id"]


def shard_count(value: Any) -> int:
    """``STATECRAWL_SHARDS`` checked: an int from 1 to MAX_SHARDS."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"STATECRAWL_SHARDS must be a whole number, not {value!r}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"STATECRAWL_SHARDS must be 1 to {MAX_SHARDS}, not {n}")
    return n


async def check_sharded(store: CrawlStore, dedupe: str) -> None:
    """Refuse what a sharded crawl cannot do yet (module docstring): ConfigError."""
    count = store.sharding.count if store.sharding is not None else 1
    if dedupe not in ("exact", "bloom", "none"):
        raise ConfigError(f"crawl {store.crawl_id!r} has {count} shards: its dupefilter must be "
                          f"'exact' (the default) or 'bloom', not {dedupe!r}")
    by_host = store.sharding is not None and store.sharding.by_host
    if not by_host and await store.client.hget(store.keys.meta, "polite") == b"1":
        raise not_by_host(store.crawl_id, count)


def not_by_host(crawl_id: str, count: int) -> ConfigError:
    """The error for a politeness budget on a crawl sharded by fingerprint."""
    return ConfigError(
        f"crawl {crawl_id!r} has {count} shards by request fingerprint, so each host's "
        "requests are in every shard: it cannot take a politeness budget (a polite crawl is "
        "sharded by host from its start: `statecrawl purge` it, then start it again with the "
        "budget, or run it with STATECRAWL_POLITENESS=off)")


def shard_of(fingerprint: bytes, shards: int) -> int:
    """The shard of a request fingerprint (module docstring)."""
    digest = fingerprint if len(fingerprint) == 20 else hashlib.sha1(fingerprint).digest()
    return int.from_bytes(digest[16:20], "big") % shards


def shard_of_host(host: str, shards: int) -> int:
    """The shard of a host's requests in a crawl sharded by host (module docstring)."""
    return int.from_bytes(hashlib.sha1(host.encode()).digest()[16:20], "big") % shards


def split_id(lease_id: str) -> tuple[int, str]:
    """``"<s>:<id>"`` -> (s, id); a bare id is shard 0's."""
    shard, sep, raw = lease_id.partition(":")
    return (int(shard), raw) if sep and shard.isdigit() else (0, lease_id)


def group_by_shard(lease_ids: Sequence[str]) -> dict[int, list[str]]:
    """Lease ids by shard, each id without its shard prefix (:func:`split_id`)."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for lease_id in lease_ids:
        shard, raw = split_id(lease_id)
        grouped[shard].append(raw)
    return grouped


def _join_id(shard: int, raw: str) -> str:
    return f"{shard}:{raw}" if shard else raw


def _prefixed(shard: int, result: CommitResult) -> CommitResult:
    if not shard or not result.leased:
        return result
    leased = tuple((_join_id(shard, i), body) for i, body in result.leased)
    return dataclasses.replace(result, leased=leased)


class Sharding:
    """The shard-spanning operations of one sharded crawl's :class:`CrawlStore`."""

    def __init__(self, store: CrawlStore, count: int, by_host: bool = False,
                 limit: int = 0) -> None:
        self.store, self.count, self.by_host = store, count, by_host
        self.keys = [CrawlKeys(store.crawl_id, s, count) for s in range(count)]
        #: a limited crawl's commits ask shard 0 for admissions (_quota.py)
        self.quota = ShardQuota(store, self.keys) if limit > 0 else None
        self._cursor = 0  # the shard the next lease asks first
        self._batch: str | None = None  # the token of the commit being sent
        self._done: dict[str, CommitResult] = {}  # its calls confirmed so far
        self._idle = store.client.register_script(script_source("shard_idle.lua"))
        self._open = store.client.register_script(script_source("open_shard.lua"))
        self._finish = store.client.register_script(script_source("mark_finished.lua"))

    async def open(self, create: bool) -> None:
        """Check (or, for a crawl whose shards were never all made, make) shards 1..n-1."""
        epoch = self.store.epoch
        start_url = await self.store.client.hget(self.keys[0].meta, "start_url") or ""
        await asyncio.gather(*(self.store.run_checked(self._open, [k.meta],
                                                      [epoch, int(create), start_url])
                               for k in self.keys[1:]))

    def route(self, request: PendingRequest) -> int:
        """The shard of a new request: by its host or its fingerprint (module docstring)."""
        if self.by_host:
            return shard_of_host(request.host, self.count)
        return shard_of(request.fingerprint, self.count)

    # -- commits ---------------------------------------------------------------------

    async def commit(
        self, worker: str, *, dedupe: str, requests: Sequence[PendingRequest],
        items: Sequence[PendingItem], acks: Sequence[str], token: str,
        counters: dict[str, int], want: int,
    ) -> CommitResult:
        if token != self._batch:
            self._batch, self._done = token, {}
        reqs: dict[int, list[PendingRequest]] = defaultdict(list)
        for r in requests:
            reqs[self.route(r)].append(r)
        ack = group_by_shard(acks)
        out: set[int] = set(reqs) | ({0} if items or counters else set())
        touched = out | set(ack)
        grants: dict[int, int] | None = None  # a limited crawl: each shard's admissions
        if self.quota is not None:
            grants = await self.quota.grants(worker, token, dedupe, reqs) if reqs else {}
        if len(touched) <= 1:  # one shard: one call, as unsharded
            s = touched.pop() if touched else self._cursor % self.count
            result = await self._call(worker, s, "1", dedupe, reqs[s], items if s == 0 else (),
                                      ack[s], counters if s == 0 else {}, want, token,
                                      None if grants is None else grants.get(s, 0))
            await self._give_back(worker, token, [result])
            return result
        first = await self._phase(worker, "o", dedupe, token, [
            (s, reqs[s], items if s == 0 else (), (), counters if s == 0 else {}, 0,
             None if grants is None else grants.get(s, 0)) for s in sorted(out)])
        await self._give_back(worker, token, first)
        wanted = sorted(ack)
        second = await self._phase(worker, "a", dedupe, token, [
            (s, (), (), ack[s], {}, want if i == 0 else 0, None if grants is None else 0)
            for i, s in enumerate(wanted)])
        results = first + second
        return CommitResult(
            sum(r.enqueued for r in results), sum(r.duplicates for r in results),
            sum(r.limit_dropped for r in results), sum(r.acked for r in results),
            tuple(pair for r in results for pair in r.leased))

    async def _give_back(self, worker: str, token: str, results: list[CommitResult]) -> None:
        if self.quota is not None:
            await self.quota.give_back(worker, token, sum(r.spare for r in results))

    async def _phase(self, worker: str, phase: str, dedupe: str, token: str,
                     calls: list[tuple[Any, ...]]) -> list[CommitResult]:
        replies = await asyncio.gather(
            *(self._call(worker, s, phase, dedupe, r, i, a, c, w, token, g)
              for s, r, i, a, c, w, g in calls),
            return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply  # the confirmed calls are kept: a retry sends the others
        return list(replies)  # type: ignore[arg-type]

    async def _call(self, worker: str, s: int, phase: str, dedupe: str,
                    requests: Sequence[PendingRequest], items: Sequence[PendingItem],
                    acks: Sequence[str], counters: dict[str, int], want: int,
                    token: str, grant: int | None) -> CommitResult:
        sub = f"{token}.{phase}{s}"
        done = self._done.get(sub)
        if done is not None:
            return done
        result = _prefixed(s, await self.store.commit_on(
            self.keys[s], worker, dedupe=dedupe, requests=requests, items=items, acks=acks,
            token=sub, counters=counters, want=want, grant=grant))
        self._done[sub] = result
        return result

    # -- leases ----------------------------------------------------------------------

    async def lease(self, worker: str, n: int, *, check_finished: bool,
                    token: str) -> tuple[str, list[tuple[str, bytes]]]:
        start = self._cursor
        due: list[float] = []  # a polite crawl's shards whose hosts all wait: when each is due
        for i in range(self.count):
            s = (start + i) % self.count
            state, pairs = await self.store.lease_on(self.keys[s], worker, n, check_finished=False,
                                                     token=f"{token}.{s}")
            if state == "cancelled":
                return state, []
            if pairs:
                self._cursor = (s + 1) % self.count  # spread the next lease to the next shard
                return "running", [(_join_id(s, rid), body) for rid, body in pairs]
            if self.store.next_due_in is not None:
                due.append(self.store.next_due_in)
        self.store.next_due_in = min(due) if due else None
        # "finished" only from the end check: shard 0's meta alone does not say it
        if check_finished and await self.finished():
            return "finished", []
        return "running", []

    async def finished(self) -> bool:
        """The double-read end check (module docstring); marks the crawl finished."""
        first = await self._idle_pass()
        if first is None or await self._idle_pass() != first:
            return False
        state = await self.store.run_checked(self._finish, [self.keys[0].meta], [self.store.epoch])
        return (state.decode() if isinstance(state, bytes) else state) == "finished"

    async def _idle_pass(self) -> list[int] | None:
        versions = []
        for k in self.keys:
            idle, enqueued = await self._idle(keys=[k.queue, k.fifo, k.leases, k.hostq, k.stats])
            if not int(idle):
                return None
            versions.append(int(enqueued))
        return versions

    # -- leases given back -------------------------------------------------------------

    async def reconcile(self, worker: str, known: Sequence[str]) -> int:
        grouped = group_by_shard(known)
        counts = await asyncio.gather(*(self.store.reconcile_on(k, worker, grouped.get(s, []))
                                        for s, k in enumerate(self.keys)))
        return sum(counts)

    async def leave(self, worker: str) -> int:
        return sum(await asyncio.gather(*(self.store.leave_on(k, worker) for k in self.keys)))

    # -- reading ---------------------------------------------------------------------------

    async def totals(self) -> tuple[int, int, dict[str, int]]:
        """(requests queued, leases, stats summed) over every shard but 0."""
        queued = leases = 0
        stats: dict[str, int] = defaultdict(int)
        for k in self.keys[1:]:
            queued += int(await self.store.queued_on(k))
            leases += int(await self.store.client.hlen(k.leases))
            for name, value in (await self.store.client.hgetall(k.stats)).items():
                stats[name.decode()] += int(value)
        return queued, leases, dict(stats)



def shard_fixed_keys(k: CrawlKeys) -> list[str]:
    """The fixed-name keys a shard > 0 may hold (its ``shard`` hash aside)."""
    return [k.seq, k.queue, k.fifo, k.reqs, k.leases, k.workers, k.seen, k.digests, k.bloom,
            k.stats, k.tokens, k.hostq, k.ready, k.hosts, k.items, k.failed, k.dead]
