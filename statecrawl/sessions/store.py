"""A crawl's sessions in Redis: cookie jars, the session pool, the login, checkpoints.

:class:`SessionStore` is to sessions what :class:`~statecrawl.frontier.store.CrawlStore`
is to the frontier: a thin async wrapper over the keys documented in
:mod:`statecrawl.frontier.keys`, with every multi-key step one Lua script. It does no
caching and holds no session state itself; the worker-side logic (which
session a request uses, when to flush) is :mod:`statecrawl.sessions.hub`.

What is secret -- cookie values, Playwright storage states, the spider's
checkpointed ``state`` -- goes through a :class:`~statecrawl.sessions.crypto.Sealer`,
so with ``STATECRAWL_SECRET_KEY`` set it is encrypted at rest. Session
records (counts, the index of the bound proxy, never its URL) and the login
generation are not secret and stay plain.

A stored value that cannot be rebuilt -- a jar field or cookie that is not
what :mod:`statecrawl.sessions.cookies` writes, a storage state or ``spider.state``
that is not JSON of the right shape -- is poison, not a reason to stop: it is
moved to the crawl's dead-letter list (:mod:`statecrawl.frontier.deadletter`) by
``quarantine_field.lua``, only if the key still holds the bad value (a good
value another worker wrote since is kept), logged once at ERROR (naming the
session and field, never the value), counted, and the worker goes on
without it. A value this worker's ``STATECRAWL_SECRET_KEY`` cannot open is
not poison but a configuration error: :class:`SecretKeyError`, as before.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.cluster import is_cluster
from statecrawl.frontier.deadletter import DEAD_LETTER_MAX, dead_letter
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.serialize import dumps, json_type, loads
from statecrawl.frontier.store import script_source
from statecrawl.sessions.crypto import Sealer

__all__ = [
    "DEFAULT_SESSION", "BadCookie", "JarChanges", "JarEntry", "LoginState", "PoolLimits",
    "SessionDelta", "SessionStore", "SyncResult", "poison_reason", "session_id",
]

logger = logging.getLogger(__name__)

#: The session of requests that name none (Scrapy's ``meta["cookiejar"]`` unset),
#: and the one the crawl's login logs in.
DEFAULT_SESSION = "default"

_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def session_id(cookiejar: Any) -> str:
    """The session id for a ``meta["cookiejar"]`` value (any value Scrapy accepts).

    Ids become part of Redis key names, so anything outside
    ``[A-Za-z0-9._:-]{1,64}`` is replaced by a hash of its text. Scrapy keys
    jars by the value itself: ``1`` and ``"1"`` are one session here.
    """
    if cookiejar is None:
        return DEFAULT_SESSION
    text = str(cookiejar)
    if _SESSION_ID.fullmatch(text):
        return text
    return "h:" + hashlib.sha1(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class JarChanges:
    """What changed in one jar since it was last written: field -> cookie JSON, deleted fields."""

    sets: Mapping[str, bytes] = field(default_factory=dict)
    deletes: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class JarEntry:
    """One field of a session's jar hash, as Redis has it."""

    field: bytes  # JSON [domain, path, name], unchecked
    raw: bytes  # the value as stored (a Fernet token when sealed): what a dead letter keeps
    body: bytes  # the value opened: the cookie's JSON, unchecked


@dataclass(frozen=True, slots=True)
class BadCookie:
    """A jar field that could not be rebuilt into a cookie, and why (never its value)."""

    entry: JarEntry
    error: str


def poison_reason(exc: BaseException) -> str:
    """Why a stored value was refused, for logs and dead letters, without quoting the value.

    Only messages statecrawl writes itself (the checks' ``ValueError``, JSON
    errors, which give positions) are kept; anything else is named by type.
    """
    if isinstance(exc, (ValueError, SerializationError)):
        return str(exc)[:300]
    return f"{type(exc).__name__} while rebuilding it"


@dataclass(frozen=True, slots=True)
class SessionDelta:
    """Usage of one session by this worker since the last flush."""

    uses: int = 0
    errors: float = 0.0  # error-score change: +1 per failure, -0.5 per success
    retire: str = ""  # a reason (e.g. "403") to retire a pool session now


@dataclass(frozen=True, slots=True)
class PoolLimits:
    size: int  # pool sessions kept active (0: no pool)
    max_uses: int  # 0: unlimited
    max_errors: float  # 0: unlimited
    max_age: float  # seconds; 0: unlimited
    proxies: int  # how many proxies sessions are bound to (0: none)


@dataclass(frozen=True, slots=True)
class PoolMember:
    session: str
    proxy: int  # index into STATECRAWL_PROXIES, -1 for none
    uses: int
    errors: float


@dataclass(frozen=True, slots=True)
class SyncResult:
    retired: tuple[str, ...]  # retired by this call
    pool: tuple[PoolMember, ...]  # active pool sessions, oldest first
    proxies: dict[str, int]  # explicit session -> its proxy index


@dataclass(frozen=True, slots=True)
class LoginState:
    generation: int  # logins so far that succeeded; 0: never logged in
    failed_at: int | None  # ms (Redis clock) of the last failed attempt since the last success
    error: str | None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def jar_field(domain: str, path: str, name: str) -> str:
    """A cookie's field in its jar hash: what identifies it in a cookie jar."""
    return dumps([domain, path, name], "cookie key").decode()


class SessionStore:
    """Operations on one crawl's session keys. Creating it does no I/O.

    *worker* names the worker in dead letters; *on_quarantine* is called with
    the kind (``cookie``, ``storage_state``, ``spider_state``) of every value
    this store quarantines (the worker counts them).
    """

    def __init__(self, client: Redis, crawl_id: str, sealer: Sealer | None = None, *,
                 worker: str = "", on_quarantine: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.keys = CrawlKeys(crawl_id)
        self.sealer = sealer or Sealer()
        self.worker = worker
        self.on_quarantine = on_quarantine
        self._sync = client.register_script(script_source("sessions_sync.lua"))
        self._release = client.register_script(script_source("lock_release.lua"))
        self._login_done = client.register_script(script_source("login_done.lua"))
        self._quarantine = client.register_script(
            script_source("dead_letter.lua") + script_source("quarantine_field.lua"))

    # -- poison ---------------------------------------------------------------------

    async def _move(self, kind: str, key: str, raw: bytes, error: str, *, ref: str, what: str,
                    then: str, field: bytes | None = None) -> bool:
        """Move a bad value to the dead-letter list if *key* (or its *field*) still holds *raw*."""
        k = self.keys
        letter = dead_letter(kind, ref, error, raw, self.worker)
        moved = bool(await self._quarantine(
            keys=[key, k.dead, k.stats],
            args=["hash" if field is not None else "string", field or b"", raw, letter,
                  DEAD_LETTER_MAX, kind]))
        logger.error("statecrawl: %s is unreadable (%s); %s. %s", what, error, then,
                     f"Moved to the dead-letter list {k.dead}." if moved
                     else "Another worker has moved or replaced it already.")
        if self.on_quarantine is not None:
            self.on_quarantine(kind)
        return moved

    # -- cookie jars ------------------------------------------------------------

    async def load_jar(self, session: str) -> list[JarEntry]:
        """Every field stored for *session*, opened but unchecked.

        :meth:`statecrawl.sessions.cookies.SessionJar.load` rebuilds the cookies and
        returns the fields it cannot rebuild, for :meth:`quarantine_cookie`.
        Raises SecretKeyError if a value cannot be opened with this worker's key.
        """
        raw = await self.client.hgetall(self.keys.jar(session))
        what = f"cookie jar {session!r}"
        return [JarEntry(bytes(field), bytes(value), self.sealer.open(value, what))
                for field, value in raw.items()]

    async def quarantine_cookie(self, session: str, bad: BadCookie) -> bool:
        """Move an unreadable jar field to the dead-letter list (unless rewritten meanwhile)."""
        field = bad.entry.field.decode("utf-8", "replace")
        shown = field if len(field) <= 200 else field[:200] + "..."
        return await self._move(
            "cookie", self.keys.jar(session), bad.entry.raw, bad.error, field=bad.entry.field,
            ref=f"{session} {field}", what=f"cookie field {shown} of session {session}",
            then="the cookie is dropped and the session's other cookies are used")

    def queue_jar(self, pipe: Redis | Pipeline, session: str, changes: JarChanges) -> None:
        """Add the writes of *changes* to *pipe* (sealed values, HSET / HDEL)."""
        key = self.keys.jar(session)
        if changes.sets:
            pipe.hset(key, mapping={f: self.sealer.seal(v) for f, v in changes.sets.items()})
        if changes.deletes:
            pipe.hdel(key, *changes.deletes)

    async def write_jar(self, session: str, changes: JarChanges) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            self.queue_jar(pipe, session, changes)
            await pipe.execute()

    # -- the session pool --------------------------------------------------------

    def _sync_args(self, limits: PoolLimits, deltas: Mapping[str, SessionDelta],
                   ensure: Sequence[str]) -> tuple[list[str], list[Any]]:
        k = self.keys
        args: list[Any] = [limits.size, limits.max_uses, limits.max_errors,
                           int(limits.max_age * 1000), limits.proxies, len(deltas)]
        for sid, d in deltas.items():
            args += [sid, d.uses, d.errors, d.retire]
        args.append(len(ensure))
        args += list(ensure)
        return [k.sessions, k.pool, k.session_seq, k.stats], args

    @staticmethod
    def _parse_sync(out: list[Any]) -> SyncResult:
        i, n = 1, int(out[0])
        retired = tuple(_text(s) for s in out[i:i + n])
        i += n
        n = int(out[i]); i += 1
        pool = []
        for _ in range(n):
            pool.append(PoolMember(_text(out[i]), int(out[i + 1]), int(out[i + 2]),
                                   float(_text(out[i + 3]))))
            i += 4
        n = int(out[i]); i += 1
        proxies = {_text(out[i + 2 * j]): int(out[i + 2 * j + 1]) for j in range(n)}
        return SyncResult(retired, tuple(pool), proxies)

    async def flush(
        self, limits: PoolLimits, *, jars: Mapping[str, JarChanges] | None = None,
        deltas: Mapping[str, SessionDelta] | None = None, ensure: Sequence[str] = (),
    ) -> SyncResult:
        """Write jar changes and session usage, and read the pool back: one round trip.

        The jars of sessions retired by this call are deleted in the same
        pipeline's next call (a retired session's cookies are never mounted
        again), and their Playwright storage states with them.
        """
        keys, args = self._sync_args(limits, deltas or {}, ensure)
        if is_cluster(self.client):  # a cluster pipeline refuses EVALSHA: the script after
            if jars:
                async with self.client.pipeline(transaction=False) as pipe:
                    for sid, changes in jars.items():
                        self.queue_jar(pipe, sid, changes)
                    await pipe.execute()
            results = [await self._sync(keys=keys, args=args)]
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for sid, changes in (jars or {}).items():
                    self.queue_jar(pipe, sid, changes)
                await self._sync(keys=keys, args=args, client=pipe)  # queued, not sent yet
                results = await pipe.execute()
        result = self._parse_sync(results[-1])
        if result.retired:
            await self.client.delete(*(key for sid in result.retired
                                       for key in (self.keys.jar(sid), self.keys.browser(sid))))
        return result

    async def sessions(self) -> dict[str, dict[str, Any]]:
        """Every session record of the crawl (retired ones too), by id."""
        raw = await self.client.hgetall(self.keys.sessions)
        return {_text(k): loads(v, "session record") for k, v in raw.items()}

    # -- the login -----------------------------------------------------------------

    async def login_state(self) -> LoginState:
        raw = await self.client.hmget(self.keys.login, ["generation", "failed_at", "error"])
        gen, failed, error = raw
        return LoginState(int(gen or 0), int(failed) if failed else None,
                          _text(error) if error else None)

    async def try_lock(self, value: str, ttl: float) -> bool:
        """Take the login lock (SET NX PX) with *value*; False if someone holds it."""
        return bool(await self.client.set(self.keys.login_lock, value, nx=True,
                                          px=max(1, int(ttl * 1000))))

    async def lock_holder(self) -> str | None:
        raw = await self.client.get(self.keys.login_lock)
        return _text(raw) if raw is not None else None

    async def release_lock(self, value: str) -> bool:
        """Delete the lock only if it still holds *value* (compare-and-delete)."""
        return bool(await self._release(keys=[self.keys.login_lock], args=[value]))

    async def login_done(self, value: str, worker: str, ok: bool, message: str = "") -> int:
        """Record a login under the lock *value*: the new generation, 0 (failed), -1 (lock lost)."""
        k = self.keys
        return int(await self._login_done(keys=[k.login_lock, k.login, k.stats],
                                          args=[value, worker, "1" if ok else "0", message]))

    # -- browser storage states and spider state ---------------------------------

    async def save_storage_state(self, session: str, state: Mapping[str, Any]) -> int:
        """Store a Playwright storage state (cookies + localStorage); returns bytes stored."""
        body = self.sealer.seal(dumps(dict(state), "storage state"))
        await self.client.set(self.keys.browser(session), body)
        return len(body)

    async def load_storage_state(self, session: str) -> dict[str, Any] | None:
        """The storage state saved for *session*; None if there is none or it is
        unreadable (then quarantined). SecretKeyError if the key cannot open it."""
        key = self.keys.browser(session)
        raw = await self.client.get(key)
        if raw is None:
            return None
        what = f"storage state of session {session!r}"
        body = self.sealer.open(raw, what)
        from statecrawl.sessions.browser_state import (
            check_storage_state,  # it imports this module
        )

        try:
            return check_storage_state(loads(body, what))
        except Exception as exc:  # noqa: BLE001 - whatever the stored value does, it is poison
            await self._move("storage_state", key, raw, poison_reason(exc), ref=session,
                             what=f"the browser storage state of session {session}",
                             then="the session's browser context starts without it")
            return None

    async def save_spider_state(self, body: bytes) -> int:
        """Store the spider's ``state`` (already JSON); returns bytes stored."""
        sealed = self.sealer.seal(body)
        await self.client.set(self.keys.spider_state, sealed)
        return len(sealed)

    async def load_spider_state(self) -> dict[str, Any] | None:
        """The checkpointed ``spider.state``; None if there is none or it is unreadable
        (then quarantined). SecretKeyError if the key cannot open it."""
        key = self.keys.spider_state
        raw = await self.client.get(key)
        if raw is None:
            return None
        body = self.sealer.open(raw, "spider state")
        try:
            state = loads(body, "spider state")
            if not isinstance(state, dict):
                raise ValueError(f"spider.state is a JSON object, not {json_type(state)}")
            dumps(state, "spider.state")  # a state checkpoints could not save again is refused now
            return state
        except Exception as exc:  # noqa: BLE001 - whatever the stored value does, it is poison
            await self._move("spider_state", key, raw, poison_reason(exc), ref="spider_state",
                             what="the checkpointed spider.state",
                             then="the spider starts with an empty spider.state")
            return None

    async def delete(self) -> None:
        """Remove every session key of the crawl (jars and storage states included)."""
        k = self.keys
        sids = [_text(s) for s in await self.client.hkeys(k.sessions)]
        names = {*sids, DEFAULT_SESSION}
        await self.client.delete(
            k.sessions, k.pool, k.session_seq, k.login, k.login_lock, k.spider_state,
            *(k.jar(s) for s in names), *(k.browser(s) for s in names))
