"""Service crawls: a crawl that never finishes, fed requests by callers who wait for replies.

A service crawl's workers run with ``STATECRAWL_SERVICE = True`` (see
:mod:`statecrawl.frontier.scheduler`): they stay up with an empty frontier and
are woken by its pub/sub channel when a request arrives. A caller (the API's
scrape endpoint, :mod:`statecrawl.api.scrape`) makes one call with
:meth:`ServiceClient.call`:

1. it writes the request's *ticket*, ``sc:{id}:ticket:<rid>`` (its secret --
   e.g. headers for the target site, sealed by the caller -- or ``""``),
   expiring with the caller's timeout;
2. it enqueues the request into the frontier with the ordinary commit script
   (one ``dont_filter`` request: the same URL asked twice is fetched twice),
   in the same round trip as 1 (a pipeline) once the script is loaded;
3. it waits for the reply with ``BLPOP sc:{id}:reply:<rid>``, in slices, never
   past its timeout. With no reply, it deletes the ticket and the reply list
   (a reply may land just after the deadline); with one, there is nothing to
   delete: the worker deleted the ticket as it pushed the reply, and the
   list, emptied by the ``BLPOP``, is gone.

The worker that leases the request reads the ticket (:func:`read_ticket`;
gone means the caller gave up: the request is skipped) and, once it has the
result, pushes the reply (:func:`send_reply`, ``reply.lua``: only while the
ticket exists, deleting it, with a ``PEXPIRE`` on the list) *before* the
request's lease is acknowledged: the push is awaited inside the item
pipeline, and a lease is acknowledged only after its callback's output has
been through the pipelines.

**Delivered once.** The frontier leases a request to one worker at a time
and re-leases it only when that worker is declared dead (its leases are
reclaimed) or gives it back. So:

* a worker killed before its push: nothing was written; the lease is
  reclaimed, another worker fetches the page and pushes the reply;
* a worker killed after its push, before its ack: the caller may already
  have the reply; the push deleted the ticket, so the re-leased request is
  skipped unfetched (or, fetched, pushes nothing: ``reply.lua`` checks the
  ticket and deletes it atomically);
* a worker declared dead while still alive: both may fetch, one pushes.

In every case one reply is pushed while the caller waits (if any worker
serves the crawl within the timeout), and the caller takes it with its
``BLPOP``; a reply pushed after the caller gave up lands in a list nobody
reads, which the caller deletes or which expires after
``STATECRAWL_SERVICE_REPLY_TTL``. A caller killed while waiting leaves a
ticket and maybe a reply, both expiring by themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from statecrawl.exceptions import CrawlStateLost
from statecrawl.frontier.cluster import is_cluster
from statecrawl.frontier.serialize import get_request_json
from statecrawl.frontier.store import CrawlStore, PendingRequest, script_source

__all__ = [
    "DEFAULT_REPLY_TTL", "SERVICE_META_KEY", "ServiceClient", "new_request_id", "read_ticket", "send_reply",
    "service_request",
]

#: Seconds a reply list lives when nobody takes it (``STATECRAWL_SERVICE_REPLY_TTL``).
DEFAULT_REPLY_TTL = 60.0
#: ``request.meta`` key of a service request: its request id (the ticket's and reply's ``<rid>``).
SERVICE_META_KEY = "statecrawl_service"
#: Longest single BLPOP (s); also at most half the client's socket timeout (redis-py's
#: default is 5 s), so a quiet wait is never taken for a dead connection.
_WAIT_SLICE = 2.0
_REPLY_SCRIPTS: weakref.WeakKeyDictionary[Redis, AsyncScript] = weakref.WeakKeyDictionary()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _pending(body: bytes, priority: int) -> PendingRequest:
    return PendingRequest(hashlib.sha1(body).digest(), False, -priority, body)


def new_request_id() -> str:
    return uuid.uuid4().hex


def service_request(url: str, *, callback: str, errback: str | None, meta: dict[str, Any],
                    priority: int = 0) -> bytes:
    """The stored JSON of a ``dont_filter`` GET of *url* for a spider this process does not run.

    *callback* / *errback* name methods of the worker's spider (checked there when the
    request is read back, like every stored request); *meta* must be plain JSON.
    """
    return get_request_json(url, callback=callback, errback=errback, meta=meta,
                            priority=priority, dont_filter=True)


async def read_ticket(client: Redis, store: CrawlStore, request_id: str) -> bytes | None:
    """The ticket of *request_id* (its secret, ``b""`` when none), None if the caller is gone."""
    value = await client.get(store.keys.ticket(request_id))
    return None if value is None else _bytes(value)


async def send_reply(client: Redis, store: CrawlStore, request_id: str, body: bytes,
                     ttl: float = DEFAULT_REPLY_TTL) -> bool:
    """Push the reply of *request_id* (only while its ticket exists); False if the caller is gone."""
    script = _REPLY_SCRIPTS.get(client)
    if script is None:  # registered once per client: it hashes the source
        script = _REPLY_SCRIPTS[client] = client.register_script(script_source("reply.lua"))
    k = store.keys
    done = await script(keys=[k.ticket(request_id), k.reply(request_id)],
                        args=[body, max(1, int(ttl * 1000))])
    return bool(done)


class ServiceClient:
    """The caller's side of one service crawl (see the module docstring). No I/O until used.

    *client* must return bytes. One instance per process; it enqueues under its own
    writer id (``caller:<uuid>``), whose commit-replay record it removes in :meth:`close`.
    """

    def __init__(self, client: Redis, crawl_id: str, *, spider: str) -> None:
        self.client = client
        self.store = CrawlStore(client, crawl_id)
        self.spider = spider
        self.writer = f"caller:{uuid.uuid4().hex[:12]}"
        self._opened = False

    async def enqueue(self, bodies: Sequence[bytes], priority: int = 0) -> None:
        """Enqueue the requests *bodies* (built with :func:`service_request` and the same
        *priority*) in one commit; :meth:`call` waits on one, a batch on none (its results
        go elsewhere, e.g. into an API job)."""
        requests = [_pending(body, priority) for body in bodies]
        for attempt in (1, 2):
            if not self._opened:
                await self.store.open_crawl(spider=self.spider)
                self._opened = True
            try:
                await self.store.commit(self.writer, dedupe="none", requests=requests)
                return
            except CrawlStateLost:  # the crawl was deleted (or Redis emptied): make it again
                self._opened = False
                if attempt == 2:
                    raise

    async def call(self, request_id: str, body: bytes, secret: bytes, timeout: float) -> bytes | None:
        """Enqueue the request *body* (built with *request_id* in it) and wait for its reply.

        Returns the reply, or None when none came within *timeout* seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        k = self.store.keys
        ticket, reply = k.ticket(request_id), k.reply(request_id)
        pool = getattr(self.client, "connection_pool", self.client)  # a cluster client: none
        socket_timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
        wait_slice = min(_WAIT_SLICE, socket_timeout / 2) if socket_timeout else _WAIT_SLICE
        replied = False
        try:
            await self._ticket_and_enqueue(ticket, secret, max(1, int(timeout * 1000)), body)
            # Redis reads a BLPOP timeout in whole ms, and 0 means forever: stop before that
            while (left := deadline - loop.time()) >= 0.002:
                popped = await self.client.blpop([reply], timeout=min(left, wait_slice))
                if popped is not None:
                    replied = True
                    return _bytes(popped[1])
            return None
        finally:
            if not replied:  # else the worker deleted the ticket, and BLPOP emptied the list
                await self.client.delete(ticket, reply)

    async def _ticket_and_enqueue(self, ticket: str, secret: bytes, ttl_ms: int,
                                  body: bytes) -> None:
        """Write the ticket and enqueue *body*: in one round trip once the crawl is open here
        (the commit script loaded), else (or if Redis lost the script or the crawl, or on a
        cluster) one by one."""
        if self._opened and not is_cluster(self.client):  # a cluster pipeline refuses EVALSHA
            script, keys, args = self.store.commit_call(self.writer, dedupe="none",
                                                        requests=[_pending(body, 0)])
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(ticket, secret, px=ttl_ms)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                written, committed = await pipe.execute(raise_on_error=False)
            if isinstance(written, Exception):
                raise written
            if not isinstance(committed, Exception):
                return
            if str(committed).startswith("SCLOST"):  # the crawl was deleted: open it again
                self._opened = False
            elif not isinstance(committed, NoScriptError):  # (Redis restarted: load it)
                raise committed
        else:
            await self.client.set(ticket, secret, px=ttl_ms)
        await self.enqueue([body])

    async def close(self) -> None:
        """Forget this caller's commit-replay record (``tokens`` field)."""
        await self.client.hdel(self.store.keys.tokens, self.writer)

