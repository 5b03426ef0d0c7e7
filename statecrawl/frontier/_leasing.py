"""The scheduler's side of leasing: keeping the local buffer full, and what comes back.

:class:`LeasingMixin` is the half of :class:`statecrawl.frontier.scheduler.Scheduler`
that talks to the frontier: the refill loop (``lease.lua`` when no commit is
coming to lease for it), reconciliation after an outage, and turning leased
request JSON back into requests. A stored request that cannot be rebuilt, or
that falls outside the worker's :class:`~statecrawl.frontier.scope.FetchScope`, is
quarantined (``quarantine.lua``: to the crawl's dead-letter list, atomically
with its lease); one bad request never strands the batch it came in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from statecrawl.exceptions import CrawlStateLost, SerializationError
from statecrawl.frontier._buffer import SLOT_META_KEY, LeaseBuffer
from statecrawl.frontier._engine import wake
from statecrawl.frontier.hosts import parse_slot
from statecrawl.frontier.politeness import hosts_of
from statecrawl.frontier.redis_errors import Outage, is_transient
from statecrawl.frontier.serialize import request_from_json
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.frontier.store import new_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

    from statecrawl.frontier.scope import FetchScope

__all__ = ["LeasingMixin"]

logger = logging.getLogger("statecrawl.frontier.scheduler")


class LeasingMixin:
    """Leasing for the scheduler; the attributes below are the scheduler's."""

    crawler: Crawler
    state: WorkerState
    spider: Spider | None
    scope: FetchScope | None
    prefetch: int
    idle_poll_max: float
    service: bool
    _buffer: LeaseBuffer
    _open_leases: dict[str, str]
    _refill_task: asyncio.Task[None] | None
    _wakeup: asyncio.Event
    _idle: bool
    _finished: bool
    _closing: bool
    _must_reconcile: bool
    _urgent: bool
    _leasing: bool
    _drained: bool
    _quarantining: set[asyncio.Task[None]]
    _lease_outage: Outage
    _on_recovered: Callable[[], None]

    def _lease_demand(self) -> tuple[int, bool]:
        """(requests the next commit should lease, whether the buffer runs short)."""
        if self._closing or self._must_reconcile or self._leasing or self.state.fatal_reason:
            return 0, False
        # a service crawl's drained frontier has nothing to lease: commits need not hurry
        return max(0, self.prefetch - len(self._buffer)), self._short() and not self._drained

    def _short(self) -> bool:
        return len(self._buffer) <= self.prefetch // 2

    # -- leasing -------------------------------------------------------------------

    def _refill(self) -> None:
        if self._closing or (self._refill_task is not None and not self._refill_task.done()):
            return
        if self.state.store is None or self.state.fatal_reason is not None:
            return
        if self.state.commit_coming and not (self._urgent or self._idle or self._must_reconcile):
            self.state.hurry()  # that commit leases for us; no round trip of our own
            return
        self._refill_task = asyncio.ensure_future(self._refill_loop())

    async def _refill_loop(self) -> None:
        poll = 0.005
        token: str | None = None  # kept across a failed lease, so a lost reply is replayed
        while not self._closing and self.state.fatal_reason is None:
            # never while a lease is unresolved: its requests are ours but unknown yet
            if self._must_reconcile and token is None and not await self._reconcile():
                continue
            urgent, self._urgent = self._urgent, False
            want = self.prefetch if urgent else self.prefetch - len(self._buffer)
            if want <= 0:
                return
            # a service crawl never finishes: its idle workers wait for work
            check = (not self.service and self._idle and not self.state.pending_writes
                     and not self._open_leases)
            self._wakeup.clear()
            store = self.state.store
            if store is None:
                return
            token = token or new_token()
            self._leasing = True
            self.crawler.stats.inc_value("statecrawl/lease_calls")
            try:
                state, pairs = await store.lease(
                    self.state.worker_id, want, check_finished=check, token=token)
            except CrawlStateLost as exc:
                self.state.fatal("state_lost", str(exc))
                return
            except RETRY_ERRORS as exc:
                if not is_transient(exc):
                    self.state.fatal("redis_error", f"Redis refuses to lease requests: {exc}")
                    return
                self._lease_outage.failed(exc, 0.5)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._leasing = False
            token = None
            if self._lease_outage.recovered():
                self._on_recovered()
            if state == "cancelled":
                self._finished = True
                logger.info("statecrawl: crawl %r was cancelled", store.crawl_id)
                asyncio.ensure_future(self.crawler.engine.close_spider_async(reason="cancelled"))
                return
            if pairs:
                self._accept(pairs, front=urgent)
                self._idle = False
                poll = 0.005
                wake(self.crawler.engine)
                if not (self.service and len(pairs) < want):
                    if self.state.commit_coming:
                        return  # that commit tops the buffer up
                    continue
            elif state == "finished" and check:
                self._finished = True
                wake(self.crawler.engine)
                return
            elif (not self.service and not self._idle and self._open_leases
                  and store.next_due_in is None):
                return  # our own in-flight requests will kick us when they commit
            if self.service:
                # The frontier is drained. New work is announced on its channel (the first
                # request into an empty frontier publishes; so do reclaims): wait for that,
                # polling only as a safety net. Meanwhile this loop stays up, so a worker
                # short of requests neither leases nor hurries its commits for nothing.
                poll, self._drained = self.idle_poll_max, True
            # a polite crawl's hosts all wait: sleep until the first is due (or work appears)
            due = store.next_due_in if not pairs else None
            try:
                await asyncio.wait_for(self._wakeup.wait(),
                                       timeout=poll if due is None else min(max(due, poll), 5.0))
            except asyncio.TimeoutError:
                pass
            finally:
                self._drained = False
            poll = min(poll * 2, self.idle_poll_max)

    async def _reconcile(self) -> bool:
        """Run in the refill loop, so no lease is in flight meanwhile; False on error."""
        store = self.state.store
        if store is None:
            return True
        if self.state.committing:  # it may be leasing for us: wait for what it brings
            await asyncio.sleep(0.01)
            return False
        # ours: buffered, in the engine, or finished with the ack not yet committed
        known = ([lease_id for lease_id, _ in self._buffer] + list(self._open_leases)
                 + self.state.pending_acks)
        try:
            released = await store.reconcile(self.state.worker_id, known)
        except RETRY_ERRORS as exc:
            if not is_transient(exc):
                self.state.fatal("redis_error", f"Redis refuses to reconcile leases: {exc}")
                return False
            logger.warning("statecrawl: cannot reconcile leases yet (%s); retrying", exc)
            await asyncio.sleep(0.5)
            return False
        self._must_reconcile = False
        if released:
            self.crawler.stats.inc_value("statecrawl/reconciled", released)
            logger.warning("statecrawl: gave back %d leases Redis held for this worker unknown "
                           "to it", released)
        return True

    def _accept(self, leased: list[tuple[str, bytes]], *, front: bool = False,
                checked: bool = False) -> None:
        codec = self.state.codec
        if not checked and any(codec.needs_dictionary(body) for _, body in leased):
            # compressed with the crawl's dictionary, made after this worker joined
            self._track(asyncio.ensure_future(self._accept_with_dictionary(leased, front)))
            return
        self.crawler.stats.inc_value("statecrawl/leased", len(leased))
        # a polite crawl's leases carry their slot (statecrawl.frontier.hosts)
        clock = hosts_of(self.crawler).clock
        slots = [parse_slot(lease, clock) for lease, _ in leased]
        accepted: list[tuple[str, Request]] = []
        try:
            for (lease_id, slot), (_, body) in zip(slots, leased):
                try:
                    request = request_from_json(codec.unpack(body), self.spider, self.scope)
                except SerializationError as exc:
                    self._quarantine(lease_id, str(exc), codec.preview(body))
                    continue
                if slot is not None:
                    request.meta[SLOT_META_KEY] = slot
                accepted.append((lease_id, request))
        except Exception:  # noqa: BLE001 - never strand a batch of leases under a live worker
            logger.exception("statecrawl: could not take %d leased requests; giving them back",
                             len(slots))
            self._give_back([lease_id for lease_id, _ in slots])
            return
        self._buffer.extend(accepted, front=front)

    async def _accept_with_dictionary(self, leased: list[tuple[str, bytes]], front: bool) -> None:
        """Read the crawl's dictionary, then take *leased*; give them back if Redis will not say."""
        store = self.state.store
        for attempt in range(5):
            if store is None:
                break
            try:
                await self.state.codec.load(store.client, store.keys)
            except RETRY_ERRORS as exc:
                logger.warning("statecrawl: cannot read the crawl's dictionary yet (%s)", exc)
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            # without one in meta, what needs it cannot be read: quarantined by _accept
            self._accept(leased, front=front, checked=True)
            return
        self._give_back([lease.split(" ", 1)[0] for lease, _ in leased])

    def _track(self, task: asyncio.Task[None]) -> None:
        self._quarantining.add(task)
        task.add_done_callback(self._quarantining.discard)

    def _quarantine(self, lease_id: str, error: str, data: bytes | None = None) -> None:
        """A stored request that cannot be rebuilt: to the dead-letter list, not to the engine."""
        logger.error("statecrawl: quarantined stored request %s: %s", lease_id, error)
        self.crawler.stats.inc_value("statecrawl/quarantined")
        self._track(asyncio.ensure_future(self._quarantine_task(lease_id, error, data)))

    async def _quarantine_task(self, lease_id: str, error: str, data: bytes | None) -> None:
        store, backoff = self.state.store, 0.1
        while store is not None:
            try:
                await store.quarantine(self.state.worker_id, lease_id, error, data)
                return
            except RETRY_ERRORS as exc:
                if not is_transient(exc) or self.state.stop.passed():
                    logger.error("statecrawl: could not quarantine %s (%s)", lease_id, exc)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _give_back(self, lease_ids: list[str]) -> None:
        store = self.state.store
        if store is not None and lease_ids:
            asyncio.ensure_future(store.release(self.state.worker_id, lease_ids))
