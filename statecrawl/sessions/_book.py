"""The session pool as one worker keeps its books: uses, scores, retirements, proxy bindings.

:class:`PoolBook` is the bookkeeping half of :class:`statecrawl.sessions.hub.Sessions`:
what this worker did with each session since the last flush (uses, an error
score, a retirement), which sessions it must register (and learn the proxy
of), and what the last flush read back from Redis (the active pool, the proxy
each session is bound to). It does no I/O; the hub sends :meth:`PoolBook.take`
with its flush and gives the result to :meth:`PoolBook.apply`, or the taken
deltas back to :meth:`PoolBook.restore` when the flush failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from statecrawl.exceptions import ConfigError
from statecrawl.sessions.store import PoolLimits, PoolMember, SessionDelta, SyncResult

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["DEFAULTS", "PoolBook", "limits_from_settings", "proxy_list"]

#: Every session setting and its default, in one place.
DEFAULTS: dict[str, Any] = {
    "STATECRAWL_SESSION_POOL_SIZE": 0,
    "STATECRAWL_SESSION_MAX_USES": 50,
    "STATECRAWL_SESSION_MAX_ERRORS": 3.0,
    "STATECRAWL_SESSION_MAX_AGE": 3000.0,
    "STATECRAWL_SESSION_BLOCKED_STATUS": [401, 403, 429],
    "STATECRAWL_SESSION_MAX_ROTATIONS": 3,
    "STATECRAWL_SESSION_FLUSH_INTERVAL": 0.25,
    "STATECRAWL_PROXIES": [],
}


def proxy_list(settings: BaseSettings) -> list[str]:
    """``STATECRAWL_PROXIES``: a list, a JSON list, or comma-separated URLs."""
    raw = settings.get("STATECRAWL_PROXIES", DEFAULTS["STATECRAWL_PROXIES"])
    if isinstance(raw, str):
        text = raw.strip()
        raw = json.loads(text) if text.startswith("[") else text.split(",")
    proxies = [str(p).strip() for p in raw or () if str(p).strip()]
    for proxy in proxies:
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"STATECRAWL_PROXIES: {proxy!r} is not an http(s)://host:port URL")
    return proxies


def limits_from_settings(s: BaseSettings, proxies: int) -> PoolLimits:
    return PoolLimits(
        size=s.getint("STATECRAWL_SESSION_POOL_SIZE", DEFAULTS["STATECRAWL_SESSION_POOL_SIZE"]),
        max_uses=s.getint("STATECRAWL_SESSION_MAX_USES", DEFAULTS["STATECRAWL_SESSION_MAX_USES"]),
        max_errors=s.getfloat("STATECRAWL_SESSION_MAX_ERRORS",
                              DEFAULTS["STATECRAWL_SESSION_MAX_ERRORS"]),
        max_age=s.getfloat("STATECRAWL_SESSION_MAX_AGE", DEFAULTS["STATECRAWL_SESSION_MAX_AGE"]),
        proxies=proxies,
    )


@dataclass(slots=True)
class _Delta:
    uses: int = 0
    errors: float = 0.0
    retire: str = ""


class PoolBook:
    """One worker's books on the crawl's sessions (see the module docstring)."""

    def __init__(self, limits: PoolLimits, proxies: list[str]) -> None:
        self.limits = limits
        self.proxies = proxies
        self.deltas: dict[str, _Delta] = {}
        self.ensure: set[str] = set()  # sessions to register (and learn the proxy of)
        self.proxy_of: dict[str, int] = {}
        self.pool: list[PoolMember] = []
        self.retired: set[str] = set()  # retired here, not yet confirmed by a flush
        self.dead: set[str] = set()  # retired sessions: their state is not written again
        self.synced = False  # a flush has read the pool at least once
        self._rr = 0

    @property
    def has_work(self) -> bool:
        return bool(self.deltas or self.ensure)

    def choose(self) -> str | None:
        """The next usable pool session, round-robin (its use counted), or None."""
        n = len(self.pool)
        for i in range(n):
            member = self.pool[(self._rr + i) % n]
            if self.usable(member):
                self._rr = (self._rr + i + 1) % n
                self.use(member.session)
                return member.session
        return None

    def usable(self, member: PoolMember) -> bool:
        if member.session in self.retired or member.session in self.dead:
            return False
        delta = self.deltas.get(member.session)
        uses = member.uses + (delta.uses if delta else 0)
        errors = member.errors + (delta.errors if delta else 0.0)
        lim = self.limits
        return (not lim.max_uses or uses < lim.max_uses) and (
            not lim.max_errors or errors < lim.max_errors)

    def use(self, session: str) -> None:
        self._delta(session).uses += 1

    def record(self, session: str, *, ok: bool, retire: str = "") -> None:
        """Score an outcome (Crawlee's markGood / markBad / retire)."""
        delta = self._delta(session)
        delta.errors += -0.5 if ok else 1.0
        if retire:
            delta.retire = retire
            self.retired.add(session)

    def _delta(self, session: str) -> _Delta:
        delta = self.deltas.get(session)
        if delta is None:
            delta = self.deltas[session] = _Delta()
        return delta

    def proxy_url(self, session: str) -> str | None:
        """The proxy *session* is bound to; None when its binding is not known yet."""
        index = self.proxy_of.get(session)
        if index is None:
            return None
        if index < 0:  # bound before proxies were configured: a choice every worker agrees on
            index = int(hashlib.sha1(session.encode()).hexdigest()[:8], 16)
        # every worker should have the same list; a shorter one still never sends around it
        return self.proxies[index % len(self.proxies)]

    def take(self) -> tuple[dict[str, _Delta], list[str]]:
        """What the next flush sends: the deltas (taken) and the sessions to register."""
        deltas, self.deltas = self.deltas, {}
        return deltas, sorted(self.ensure)

    @staticmethod
    def wire(deltas: dict[str, _Delta]) -> dict[str, SessionDelta]:
        return {sid: SessionDelta(d.uses, d.errors, d.retire) for sid, d in deltas.items()}

    def restore(self, deltas: dict[str, _Delta]) -> None:
        """The flush failed: its deltas count again with the next one."""
        for sid, d in deltas.items():
            mine = self._delta(sid)
            mine.uses += d.uses
            mine.errors += d.errors
            mine.retire = mine.retire or d.retire

    def apply(self, result: SyncResult, ensured: list[str]) -> list[str]:
        """Take in a flush's result; returns the sessions that died (retired anywhere)."""
        self.ensure.difference_update(ensured)
        self.proxy_of.update(result.proxies)
        before = {m.session for m in self.pool}
        self.pool = list(result.pool)
        for member in self.pool:
            self.proxy_of[member.session] = member.proxy
        live = {m.session for m in self.pool}
        self.retired &= live
        gone = [*(before - live - set(result.retired)), *result.retired]  # elsewhere, then here
        self.dead.update(gone)
        self.synced = True
        return gone
