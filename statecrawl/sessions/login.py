"""Log in once per crawl, not once per worker: a login shared through Redis.

A spider that has a ``login_url`` (and a ``login_form``: the fields to fill
in) gets its requests sent in the crawl's logged-in session. The session is
the crawl's ``default`` session, whose cookie jar is in Redis
(:mod:`statecrawl.sessions.cookies`), so any worker -- a new one, or the one started
after a SIGKILL -- mounts it instead of logging in.

Exactly one worker logs in, and only when the crawl has no session or the
session it had expired:

* Every login bumps the crawl's login **generation** (``sc:{id}:login``). A
  worker remembers the generation it mounted and stamps it on each request.
* Before its first request, a worker with generation 0 takes the **login
  lock** (``SET NX PX``, value ``"<token> <worker>"``), checks the generation
  again under the lock, logs in (GET ``login_url``, fill its password form
  with ``login_form`` -- form2request, Scrapy 2.19's replacement for
  ``FormRequest.from_response`` -- and submit it), waits until the session's
  cookies are written to
  Redis, then bumps the generation and releases the lock in one Lua call
  (``login_done.lua``). Workers that did not get the lock poll the
  generation and mount the new session when it moves; if the lock holder
  died (it is gone from the crawl's ``workers``), its lock is taken over.
* A response that says the session expired -- a redirect to the login page,
  or 401 -- for a request stamped with generation N makes its worker
  re-log in *for generation N*: if the crawl is already at N+1 (another
  worker re-logged in), it mounts N+1 instead. So one expiry costs one
  login for the whole crawl. The request is sent again.
* A failed login (the form comes back, or an error status) is recorded.
  Every worker started before that moment gives up without trying the same
  wrong password, and closes with reason ``login_failed``; the requests that
  waited go back to the frontier, so the crawl is not finished. A worker
  started later (with corrected credentials) tries once.

The login requests go through the downloader middlewares (robots.txt,
proxies, cookies) but not through the frontier: they are downloaded with
``engine.download_async`` by the worker holding the lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from form2request import form2request
from scrapy import Request, signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import TextResponse
from scrapy.http.request import NO_CALLBACK

from statecrawl.exceptions import ConfigError, LoginError
from statecrawl.frontier.redis_errors import is_transient
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.sessions.store import DEFAULT_SESSION, session_id

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from statecrawl.sessions.hub import Sessions

__all__ = ["GENERATION_META_KEY", "LOGIN_META_KEY", "LoginMiddleware", "pop_session_args"]

logger = logging.getLogger(__name__)

#: ``request.meta`` key marking the login's own requests (not gated, not checked).
LOGIN_META_KEY = "statecrawl_login"
#: ``request.meta`` key: the login generation a request was sent with (worker-local).
GENERATION_META_KEY = "_statecrawl_login_generation"
#: ``request.meta`` key: times a request was sent again after its session expired.
LOGIN_RETRIES_META_KEY = "statecrawl_login_retries"
_MAX_RETRIES = 2
_POLL = 0.1
_PASSWORD_FORM = '//form[.//input[@type="password"]]'


def _json_object(name: str, value: Any) -> dict[str, str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"-a {name}= expects a JSON object, e.g. '{{\"k\": \"v\"}}': "
                              f"{exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"-a {name}= expects a JSON object of names to values")
    return {k: str(v) for k, v in value.items()}


def pop_session_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the session arguments out of a spider's ``-a`` arguments.

    ``login_url`` + ``login_form`` (JSON object: the form fields to fill in),
    and the pass-through ``cookies`` / ``headers`` (JSON objects; see
    :mod:`statecrawl.sessions.passthrough`). Returns the spider attributes to set:
    ``login_url``, ``login_form``, ``statecrawl_cookies``,
    ``statecrawl_headers``. Of these only ``login_url`` may be recorded in
    the crawl's arguments: the form holds a password, and pass-through
    values are by definition not kept. A worker given ``login_url`` without
    ``login_form`` (one joining with ``statecrawl worker``) mounts the crawl's
    session but cannot log in itself: it waits for a worker that can.
    """
    login_url = kwargs.pop("login_url", None) or None
    login_form = _json_object("login_form", kwargs.pop("login_form", None))
    if login_url is not None:
        parts = urlsplit(str(login_url).strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"-a login_url= must be an http(s) URL, got {login_url!r}")
        login_url = str(login_url).strip()
    elif login_form:
        raise ConfigError("-a login_form= needs -a login_url=")
    return {
        "login_url": login_url, "login_form": login_form,
        "statecrawl_cookies": _json_object("cookies", kwargs.pop("cookies", None)) or {},
        "statecrawl_headers": _json_object("headers", kwargs.pop("headers", None)) or {},
    }


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _same_page(a: str, b: str) -> bool:
    """Same scheme, host and path: ``/login?next=/x`` is the login page."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc.lower(), pa.path.rstrip("/") or "/") == (
        pb.scheme, pb.netloc.lower(), pb.path.rstrip("/") or "/")


def _has_password_form(response: Response) -> bool:
    return isinstance(response, TextResponse) and bool(response.xpath(_PASSWORD_FORM))


class LoginMiddleware:
    """Gate requests of the login session on a login shared by the crawl (module docstring)."""

    def __init__(self, crawler: Crawler, sessions: Sessions, timeout: float) -> None:
        self.crawler = crawler
        self.sessions = sessions
        self.timeout = timeout
        self.session = DEFAULT_SESSION
        self.mounted = 0  # the login generation this worker uses
        self.login_url: str | None = None  # from the spider, at spider_opened
        self.login_form: dict[str, str] | None = None
        self._flow: asyncio.Future[None] | None = None
        self._failed: LoginError | None = None
        crawler.signals.connect(self._opened, signal=signals.spider_opened)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LoginMiddleware:
        from statecrawl.sessions.hub import Sessions

        return cls(crawler, Sessions.of(crawler),
                   crawler.settings.getfloat("STATECRAWL_LOGIN_TIMEOUT", 60.0))

    def _opened(self, spider: Any) -> None:
        self.login_url = getattr(spider, "login_url", None) or None
        self.login_form = getattr(spider, "login_form", None) or None
        if self.login_url:
            # A recorded failure stops the workers *started* before it (module docstring):
            # take this worker's start on the Redis clock now, not at its first request,
            # which may come after another worker's failed login.
            opening = asyncio.ensure_future(self.sessions.open())
            opening.add_done_callback(_retrieved)  # its error, if any, is met again in ensure()

    # -- requests -------------------------------------------------------------------

    async def process_request(self, request: Request) -> Request | None:
        if not self.login_url:
            return None
        meta = request.meta
        if meta.get(LOGIN_META_KEY) or meta.get("dont_obey_robotstxt"):
            return None  # the login itself, and robots.txt (which the login page may wait for)
        meta.setdefault("cookiejar", self.session)
        if session_id(meta["cookiejar"]) != self.session:
            return None  # a session the spider manages itself
        try:
            meta[GENERATION_META_KEY] = await self.ensure(0)
        except LoginError:
            return self._later(request)
        return None

    def _later(self, request: Request) -> Request:
        """Back to the frontier, to wait for a worker that can log in."""
        from statecrawl.sessions.hub import requeue

        copy = requeue(request)
        copy.meta.pop(GENERATION_META_KEY, None)
        self.crawler.stats.inc_value("statecrawl/login_requeued")
        return copy

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        seen = request.meta.pop(GENERATION_META_KEY, None)
        if seen is None or not self._expired(request, response):
            return response
        stats = self.crawler.stats
        stats.inc_value("statecrawl/login_expired")
        retries = int(request.meta.get(LOGIN_RETRIES_META_KEY, 0))
        if retries >= _MAX_RETRIES:
            logger.warning("statecrawl: %s still finds the session expired after %d logins",
                           request.url, retries)
            return response
        try:
            await self.ensure(seen)
        except LoginError:
            return self._later(request)
        retry = request.replace(dont_filter=True)
        retry.meta[LOGIN_RETRIES_META_KEY] = retries + 1
        retry.meta.pop("is_start_request", None)
        stats.inc_value("statecrawl/login_retried")
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> None:
        request.meta.pop(GENERATION_META_KEY, None)

    def _expired(self, request: Request, response: Response) -> bool:
        """Did the site say this session is no longer logged in?"""
        assert self.login_url is not None
        if response.status == 401:
            return True
        if 300 <= response.status < 400:
            location = response.headers.get(b"Location", b"").decode("latin-1")
            return bool(location) and _same_page(urljoin(response.url, location), self.login_url)
        # a redirect followed by RedirectMiddleware that landed on the login page
        return bool(request.meta.get("redirect_urls")) and _same_page(response.url, self.login_url)

    # -- the crawl-wide login -----------------------------------------------------------

    async def ensure(self, seen: int) -> int:
        """Return a login generation newer than *seen*, logging in only if nobody has."""
        while self.mounted <= seen:
            if self._failed is not None:
                raise self._failed
            if self._flow is None or self._flow.done():
                self._flow = asyncio.ensure_future(self._login_flow(seen))
            try:
                await asyncio.shield(self._flow)
            except LoginError as exc:
                self._fail(exc)
            except RETRY_ERRORS as exc:  # Redis is away: wait, then look again
                if not is_transient(exc):  # it refuses: waiting does not help
                    WorkerState.of(self.crawler).fatal(
                        "redis_error", f"Redis refuses the crawl's login state: {exc}")
                    self._failed = LoginError(f"the login state cannot be read: {exc}")
                    continue
                logger.warning("statecrawl: login state unreachable (%s); retrying", exc)
                await asyncio.sleep(0.5)
        return self.mounted

    def _fail(self, exc: LoginError) -> None:
        if self._failed is None:
            self._failed = exc
            logger.error("statecrawl: login failed: %s", exc)
            engine = self.crawler.engine
            if engine is not None and engine.spider is not None:
                asyncio.ensure_future(engine.close_spider_async(reason="login_failed"))

    async def _login_flow(self, seen: int) -> None:
        store = await self.sessions.open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        value = f"{uuid.uuid4().hex} {self.sessions.worker_id}"
        while True:
            state = await store.login_state()
            if state.generation > seen:
                self._mount(state.generation)
                return
            # Failed since this worker started: same run, same credentials. (A
            # worker started later may carry new ones, and tries once.)
            if state.failed_at is not None and state.failed_at >= self.sessions.started_at:
                raise LoginError(f"the crawl's login failed: {state.error}")
            if self.login_form is not None and await store.try_lock(value, self.timeout):
                if await self._login_locked(value, seen):
                    return
                continue
            holder = await store.lock_holder()
            if holder is not None and not await self._alive(holder.split(" ", 1)[-1]):
                if await store.release_lock(holder):
                    logger.warning("statecrawl: took over the login lock of dead worker %s",
                                   holder.split(" ", 1)[-1])
                continue
            if loop.time() > deadline:
                raise LoginError(f"no login within STATECRAWL_LOGIN_TIMEOUT ({self.timeout}s)")
            await asyncio.sleep(_POLL)

    async def _login_locked(self, value: str, seen: int) -> bool:
        """Holding the lock: log in unless someone did meanwhile. True when mounted."""
        store = self.sessions.store
        assert store is not None
        try:
            state = await store.login_state()
            if state.generation > seen:  # logged in between our check and our lock
                await store.release_lock(value)
                self._mount(state.generation)
                return True
            try:
                await self._submit()
            except LoginError as exc:
                await store.login_done(value, self.sessions.worker_id, False, str(exc))
                raise
            await self.sessions.flush_now()  # the cookies are in Redis before anyone mounts them
        except BaseException:
            await asyncio.shield(store.release_lock(value))
            raise
        generation = await store.login_done(value, self.sessions.worker_id, True)
        if generation < 0:
            logger.warning("statecrawl: the login lock expired during the login; checking again")
            return False
        self.mounted = generation
        self.crawler.stats.inc_value("statecrawl/logins")
        logger.info("statecrawl: logged in at %s (login generation %d)", self.login_url, generation)
        return True

    def _mount(self, generation: int) -> None:
        """Use the session another worker logged in: reload its jar from Redis."""
        self.sessions.drop_jar(self.session)
        self.mounted = generation
        self.crawler.stats.inc_value("statecrawl/login_mounted")
        logger.info("statecrawl: mounted the crawl's login session (generation %d)", generation)

    async def _alive(self, worker: str) -> bool:
        store = self.sessions.store
        assert store is not None
        return await store.client.zscore(store.keys.workers, worker) is not None

    async def _submit(self) -> None:
        """GET the login page, fill in its form, POST it; raise LoginError unless logged in."""
        assert self.login_url is not None
        engine = self.crawler.engine
        meta = {LOGIN_META_KEY: True, "cookiejar": self.session, "dont_redirect": True,
                "handle_httpstatus_all": True}
        try:
            page = await engine.download_async(Request(
                self.login_url, meta=dict(meta), dont_filter=True, callback=NO_CALLBACK))
            if page.status >= 400:
                raise LoginError(f"the login page {self.login_url} answered HTTP {page.status}")
            forms = page.xpath(_PASSWORD_FORM) if isinstance(page, TextResponse) else []
            if not forms:
                raise LoginError(f"no login form (a form with a password field) at {page.url}")
            # form2request: what Scrapy 2.19 recommends over FormRequest.from_response
            # (hidden fields such as CSRF tokens are kept, ours are filled in)
            submit = form2request(forms[0], self.login_form).to_scrapy(
                callback=NO_CALLBACK, meta=dict(meta), dont_filter=True)
            result = await engine.download_async(submit)
        except IgnoreRequest as exc:
            raise LoginError(f"the login request was refused: {exc}") from None
        if 300 <= result.status < 400:
            location = result.headers.get(b"Location", b"").decode("latin-1")
            if location and _same_page(urljoin(result.url, location), self.login_url):
                raise LoginError("the site sent the login back to the login page")
            return
        if result.status >= 400:
            raise LoginError(f"the login form was answered with HTTP {result.status}")
        if _has_password_form(result):
            raise LoginError("the login form came back (wrong credentials?)")
