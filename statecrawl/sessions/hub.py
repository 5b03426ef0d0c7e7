"""Sessions that outlive workers: the worker's session hub and the session pool.

A session is what a site knows a visitor by: its cookies, the proxy (IP) it
comes from, and -- after a login -- its account. Workers are disposable, so
sessions live in Redis (:mod:`statecrawl.sessions.store`) and
:class:`Sessions`, one per crawler (``Sessions.of(crawler)``, like
:class:`~statecrawl.frontier.state.WorkerState`), is the worker's view of them:

* the cookie jars this worker has mounted (:mod:`statecrawl.sessions.jar`),
* this worker's view of the crawl's **session pool** (its books:
  :mod:`statecrawl.sessions._book`), modelled on Crawlee's
  ``SessionPool``: ``STATECRAWL_SESSION_POOL_SIZE`` sessions per crawl, each
  counted (uses, an error score) and retired on a blocked status (401, 403,
  429 by default), at ``STATECRAWL_SESSION_MAX_ERRORS`` or
  ``STATECRAWL_SESSION_MAX_USES``, or after ``STATECRAWL_SESSION_MAX_AGE``;
  the pool refills itself to its size;
* **proxy affinity**: each session is bound, once and for every worker, to
  one of ``STATECRAWL_PROXIES`` (Redis keeps its index, never its URL), and
  its requests get that ``meta["proxy"]``.

Nothing here waits on Redis per request. Uses, error scores and cookie diffs
collect locally and one background flush per
``STATECRAWL_SESSION_FLUSH_INTERVAL`` writes them and reads the pool back
(``sessions_sync.lua``), on its own Redis connection so that flushing at
close does not race the worker state's. A request waits only the first time
its worker meets a session (its jar is loaded, its proxy looked up).

A jar field that cannot be rebuilt is quarantined when the jar is loaded
(:meth:`SessionStore.quarantine_cookie
<statecrawl.sessions.store.SessionStore.quarantine_cookie>`): the session
goes on with its other cookies. Every value the store quarantines counts in
the worker's ``statecrawl/quarantined``.

:class:`statecrawl.sessions.pool.SessionMiddleware` gives each request its session
and proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import IgnoreRequest

from statecrawl.exceptions import SecretKeyError
from statecrawl.frontier.connection import connect, crawl_id_for
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.sessions._book import (
    DEFAULTS,
    PoolBook,
    limits_from_settings,
    proxy_list,
)
from statecrawl.sessions.crypto import Sealer
from statecrawl.sessions.jar import SessionJar
from statecrawl.sessions.store import (
    DEFAULT_SESSION,
    JarChanges,
    SessionStore,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy import Request
    from scrapy.crawler import Crawler

__all__ = ["DEFAULTS", "DEFAULT_SESSION", "Sessions", "proxy_list", "requeue"]

logger = logging.getLogger(__name__)


def requeue(request: Request) -> Request:
    """A copy of *request* for the frontier, for a request this worker cannot send.

    Returned from a downloader middleware's ``process_request``, it is
    scheduled (stored in the frontier) before the original's lease is
    acknowledged: failing the request instead would acknowledge it, and a
    crawl whose login failed would end with its pages never fetched. A
    request that did not come from the frontier (robots.txt, a login page,
    anything downloaded with ``engine.download_async``) cannot wait there:
    it fails with IgnoreRequest.
    """
    from statecrawl.frontier.scheduler import LEASE_META_KEY

    if LEASE_META_KEY not in request.meta:
        raise IgnoreRequest(f"statecrawl: cannot send {request.url} from this worker")
    copy = request.replace(dont_filter=True)
    copy.meta.pop("is_start_request", None)  # else deduplicated against itself
    return copy


class Sessions:
    """One worker's view of the crawl's sessions (see the module docstring)."""

    def __init__(self, crawler: Crawler) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.proxies = proxy_list(s)
        self.limits = limits_from_settings(s, len(self.proxies))
        self.book = PoolBook(self.limits, self.proxies)
        self.blocked = frozenset(int(x) for x in s.getlist(
            "STATECRAWL_SESSION_BLOCKED_STATUS", DEFAULTS["STATECRAWL_SESSION_BLOCKED_STATUS"]))
        self.max_rotations = s.getint("STATECRAWL_SESSION_MAX_ROTATIONS",
                                      DEFAULTS["STATECRAWL_SESSION_MAX_ROTATIONS"])
        self.flush_interval = s.getfloat("STATECRAWL_SESSION_FLUSH_INTERVAL",
                                         DEFAULTS["STATECRAWL_SESSION_FLUSH_INTERVAL"])
        self.sealer = Sealer.from_settings(s)
        self.store: SessionStore | None = None
        self.client: Redis | None = None
        self._opening: asyncio.Future[None] | None = None
        self.started_at = 0  # ms, Redis clock: when this worker opened its sessions
        self._jars: dict[str, SessionJar] = {}
        self._loading: dict[str, asyncio.Future[SessionJar]] = {}
        self._dirty_jars: set[str] = set()
        self._lock = asyncio.Lock()
        self._hurry = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal_logged = False
        #: Coroutines run at close before the last flush (final checkpoints, storage states).
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        crawler.signals.connect(self._close, signal=signals.spider_closed)

    @classmethod
    def of(cls, crawler: Crawler) -> Sessions:
        """The crawler's Sessions, created on first use (no I/O)."""
        sessions = getattr(crawler, "_statecrawl_sessions", None)
        if sessions is None:
            sessions = cls(crawler)
            crawler._statecrawl_sessions = sessions  # type: ignore[attr-defined]
        return sessions

    @property
    def worker_id(self) -> str:
        return WorkerState.of(self.crawler).worker_id

    @property
    def pool_enabled(self) -> bool:
        return self.limits.size > 0

    async def open(self) -> SessionStore:
        """Connect (once, however many components ask) and return the store."""
        if self._opening is None:  # one task: every caller awaits its result, or its error
            self._opening = asyncio.ensure_future(self._connect())
        await asyncio.shield(self._opening)
        assert self.store is not None
        return self.store

    async def _connect(self) -> None:
        state = WorkerState.of(self.crawler)
        await state.open()  # the crawl exists and is registered; its Redis is ours
        self.client = await connect(state.url, name=f"statecrawl:{self.worker_id}:sessions")
        seconds, micros = await self.client.time()
        self.started_at = seconds * 1000 + micros // 1000
        self.store = SessionStore(self.client, crawl_id_for(self.crawler), self.sealer,
                                  worker=self.worker_id, on_quarantine=self._quarantined)

    # -- cookie jars -----------------------------------------------------------------

    async def jar(self, session: str) -> SessionJar:
        """The session's jar, loaded from Redis on its first use in this worker."""
        jar = self._jars.get(session)
        if jar is not None:
            return jar
        loading = self._loading.get(session)
        if loading is None:
            loading = self._loading[session] = asyncio.ensure_future(self._load(session))
        try:
            return await asyncio.shield(loading)
        finally:
            if loading.done():
                self._loading.pop(session, None)

    async def _load(self, session: str) -> SessionJar:
        store = await self.open()
        jar = SessionJar(session)
        backoff = 0.1
        while True:  # the request waits while Redis is unreachable, as leases do
            try:
                loaded = jar.load(await store.load_jar(session))
                for bad in loaded.poison:  # one unreadable cookie costs that cookie only
                    await store.quarantine_cookie(session, bad)
                if loaded.expired:
                    await store.write_jar(session, JarChanges({}, loaded.expired))
                break
            except SecretKeyError as exc:
                self._fatal(exc)
                raise
            except RETRY_ERRORS as exc:
                logger.warning("statecrawl: cannot load the cookie jar of session %s yet (%s)",
                               session, exc)
                jar = SessionJar(session)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._jars[session] = jar
        self.crawler.stats.inc_value("statecrawl/jars_loaded")
        if session not in self.book.proxy_of:
            self.book.ensure.add(session)
            self._kick()
        return jar

    def _quarantined(self, kind: str) -> None:
        """A stored session value was unreadable and quarantined (logged by the store)."""
        self.crawler.stats.inc_value("statecrawl/quarantined")

    def jar_changed(self, jar: SessionJar) -> None:
        if jar.dirty and jar.session not in self.book.dead and self._jars.get(jar.session) is jar:
            self._dirty_jars.add(jar.session)
            self._kick()

    def is_retired(self, session: str) -> bool:
        """Was *session* retired (seen by this worker)? Its state is not saved again."""
        return session in self.book.dead

    def drop_jar(self, session: str) -> None:
        """Forget the local copy; the next use reloads it from Redis."""
        self._jars.pop(session, None)
        self._dirty_jars.discard(session)

    # -- the pool and proxies ------------------------------------------------------------

    async def pick(self) -> str:
        """A pool session for a request that names none; counts the use."""
        if not self.book.synced:
            await self.flush_now()
        for _ in range(3):
            session = self.book.choose()
            if session is not None:
                self._kick()
                return session
            await self.flush_now()  # used up here: the flush retires them and refills the pool
        raise IgnoreRequest("statecrawl: the session pool has no usable session")

    def use(self, session: str) -> None:
        self.book.use(session)
        self._kick()

    def record(self, session: str, *, ok: bool, retire: str = "") -> None:
        """Score the outcome of a request of *session* (Crawlee's markGood / markBad / retire)."""
        self.book.record(session, ok=ok, retire=retire)
        if retire:
            self.hurry()
        self._kick()

    async def proxy_for(self, session: str) -> str | None:
        """The proxy URL *session* is bound to (None without ``STATECRAWL_PROXIES``)."""
        if not self.proxies:
            return None
        if session not in self.book.proxy_of:
            self.book.ensure.add(session)
            await self.flush_now()
            self.book.proxy_of.setdefault(session, -1)
        return self.book.proxy_url(session)

    # -- flushing ------------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._dirty_jars) or self.book.has_work

    def hurry(self) -> None:
        """Flush now instead of at the end of the interval."""
        self._hurry.set()
        self._kick()

    def _kick(self) -> None:
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        backoff = 0.1
        while self._has_work() and not self._closed:
            try:
                await asyncio.wait_for(self._hurry.wait(), self.flush_interval)
            except asyncio.TimeoutError:
                pass
            self._hurry.clear()
            if not await self._try_flush():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    async def flush_now(self) -> None:
        """Write everything pending and read the pool back, retrying while Redis fails."""
        backoff = 0.1
        while not await self._try_flush():
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _try_flush(self) -> bool:
        store = await self.open()
        if WorkerState.of(self.crawler).fatal_reason == "state_lost":
            self._dirty_jars.clear()  # the crawl is gone from Redis: write nothing back into it
            self.book.take()
            self.book.ensure.clear()
            return True
        async with self._lock:
            jars = {}
            for sid in self._dirty_jars:
                jar = self._jars.get(sid)
                if jar is not None and sid not in self.book.dead:
                    changes = jar.take_changes()
                    if changes.sets or changes.deletes:
                        jars[sid] = (jar, changes)
            self._dirty_jars.clear()
            deltas, ensure = self.book.take()
            try:
                result = await store.flush(
                    self.limits, jars={sid: ch for sid, (_, ch) in jars.items()},
                    deltas=self.book.wire(deltas), ensure=ensure)
            except RETRY_ERRORS as exc:
                for sid, (jar, changes) in jars.items():
                    jar.unwritten(changes)
                    self._dirty_jars.add(sid)
                self.book.restore(deltas)
                self.crawler.stats.inc_value("statecrawl/redis_errors")
                logger.warning("statecrawl: session flush failed (%s); keeping it for a retry", exc)
                return False
        stats = self.crawler.stats
        for jar, changes in jars.values():
            jar.written(changes)
            stats.inc_value("statecrawl/cookies_written", len(changes.sets) + len(changes.deletes))
        stats.inc_value("statecrawl/session_flushes")
        for sid in self.book.apply(result, ensure):
            self.drop_jar(sid)
        for sid in result.retired:
            stats.inc_value("statecrawl/sessions_retired")
            reason = deltas[sid].retire if sid in deltas else ""
            logger.info("statecrawl: session %s retired (%s)", sid, reason or "limit reached")
        return True

    def _fatal(self, exc: Exception) -> None:
        if self._closed or self._fatal_logged:
            return
        self._fatal_logged = True
        logger.error("statecrawl: %s; closing the spider", exc)
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:
            asyncio.ensure_future(engine.close_spider_async(reason="secret_key_error"))

    async def _close(self) -> None:
        if self.store is None or self._closed:
            return
        try:
            for hook in self.before_close:
                try:
                    await hook()
                except Exception:
                    logger.exception("statecrawl: error while saving session state at close")
            if self._has_work():
                try:
                    await asyncio.wait_for(self.flush_now(), 10)
                except asyncio.TimeoutError:
                    logger.error("statecrawl: could not write the last session changes to Redis")
        finally:
            self._closed = True
            if self._flusher is not None:
                self._flusher.cancel()
            assert self.client is not None
            await self.client.aclose()
            self.store = None
