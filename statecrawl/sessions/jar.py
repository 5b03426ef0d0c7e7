"""A session's cookie jar as Redis keeps it: Scrapy's jar, tracking what changed.

:class:`SessionJar` is one session's Scrapy
:class:`~scrapy.http.cookies.CookieJar` -- Scrapy's jar and the standard
library's cookie policy do all parsing, matching and expiry -- whose inner
``http.cookiejar.CookieJar`` is a :class:`_TrackingCookieJar`: it notes the
``(domain, path, name)`` of every cookie set or cleared (``Set-Cookie``,
``Max-Age=0``, expiry), so only those are written back, and only if their
JSON differs from what Redis has (a site that sends the same ``Set-Cookie``
on every page costs nothing). Expired cookies are dropped when a jar is
loaded.

A jar field that cannot be rebuilt into a cookie (not JSON, not the shape
:func:`cookie_to_dict` writes, values of the wrong type, a field name that is
not the cookie's ``[domain, path, name]``) costs that cookie only:
:meth:`SessionJar.load` leaves it out and returns it, and the worker moves it
to the crawl's dead-letter list (:meth:`SessionStore.quarantine_cookie
<statecrawl.sessions.store.SessionStore.quarantine_cookie>`).

The middleware that mounts these jars on requests is
:mod:`statecrawl.sessions.cookies`; the flush that writes them,
:mod:`statecrawl.sessions.hub`.
"""

from __future__ import annotations

import http.cookiejar
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.http.cookies import CookieJar

from statecrawl.frontier.serialize import dumps, json_type, loads
from statecrawl.sessions.store import (
    BadCookie,
    JarChanges,
    JarEntry,
    jar_field,
    poison_reason,
)

if TYPE_CHECKING:
    from http.cookiejar import Cookie


__all__ = ["JarLoad", "SessionJar", "cookie_from_dict",
           "cookie_to_dict"]

_Key = tuple[str, str, str]
_ALWAYS = frozenset({"name", "value", "domain", "path"})
_FLAGS = ("port_specified", "domain_specified", "domain_initial_dot", "path_specified", "secure",
          "discard", "rfc2109")
_OPTIONAL_TEXT = ("value", "port", "comment", "comment_url")


def cookie_to_dict(cookie: Cookie) -> dict[str, Any]:
    """The cookie as plain JSON data (every attribute ``http.cookiejar.Cookie`` has)."""
    data: dict[str, Any] = {
        "name": cookie.name, "value": cookie.value, "domain": cookie.domain,
        "path": cookie.path, "secure": cookie.secure, "expires": cookie.expires,
        "version": cookie.version, "port": cookie.port, "port_specified": cookie.port_specified,
        "domain_specified": cookie.domain_specified,
        "domain_initial_dot": cookie.domain_initial_dot, "path_specified": cookie.path_specified,
        "discard": cookie.discard, "comment": cookie.comment, "comment_url": cookie.comment_url,
        "rest": dict(cookie._rest),  # type: ignore[attr-defined]  # HttpOnly, SameSite
        "rfc2109": cookie.rfc2109,
    }
    # defaults (None, False, 0, {}) are left out: a jar is read on every worker's first use
    return {k: v for k, v in data.items() if k in _ALWAYS or v not in (None, False, 0, {})}


def _text(data: dict[str, Any], key: str, default: str | None) -> str | None:
    """``data[key]`` (else *default*): a string, or None where the default is None."""
    value = data.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"cookie {key!r} is {json_type(value)}, not a string")
    return value


def cookie_from_dict(data: Any) -> Cookie:
    """Rebuild a cookie from :func:`cookie_to_dict`'s data.

    Raises ValueError unless *data* has that shape and those types, so that a
    cookie mounted from Redis cannot fail a request later. The message names
    the attribute and the type found, never a value (it is logged).
    """
    if not isinstance(data, dict):
        raise ValueError(f"a cookie is a JSON object, not {json_type(data)}")
    if "name" not in data or "domain" not in data:
        raise ValueError("a cookie needs a name and a domain")
    text = {key: _text(data, key, None) for key in _OPTIONAL_TEXT}
    flags = {key: data.get(key, False) for key in _FLAGS}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"cookie {key!r} is {json_type(flag)}, not true/false")
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"cookie 'version' is {json_type(version)}, not a whole number")
    expires = data.get("expires")
    if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, (int, float))
            or (isinstance(expires, float) and not math.isfinite(expires))):
        raise ValueError("cookie 'expires' is not a finite number")
    rest = data.get("rest", {})
    if not isinstance(rest, dict) or not all(
            v is None or isinstance(v, str) for v in rest.values()):
        raise ValueError("cookie 'rest' is not an object of strings")
    return http.cookiejar.Cookie(
        version=version, name=_text(data, "name", ""), value=text["value"], port=text["port"],
        domain=_text(data, "domain", ""), path=_text(data, "path", "/"), expires=expires,
        comment=text["comment"], comment_url=text["comment_url"], rest=dict(rest), **flags,
    )


def _rebuild(entry: JarEntry) -> tuple[str, Cookie, bytes]:
    """The field, cookie and canonical JSON of one stored jar field; raises if it is poison."""
    field = entry.field.decode()
    cookie = cookie_from_dict(loads(entry.body, "cookie"))
    if jar_field(cookie.domain, cookie.path, cookie.name) != field:
        raise ValueError("the field name is not the [domain, path, name] of the cookie it holds")
    return field, cookie, dumps(cookie_to_dict(cookie), "cookie")


@dataclass(frozen=True, slots=True)
class JarLoad:
    """What :meth:`SessionJar.load` left out."""

    expired: list[str]  # fields of expired cookies (to delete)
    poison: list[BadCookie]  # fields it could not rebuild (to quarantine)


class _TrackingCookieJar(http.cookiejar.CookieJar):
    """The standard jar, noting which cookies were set or cleared since the last write.

    Every path that changes a ``CookieJar`` goes through ``set_cookie`` or
    ``clear`` (``set_cookie_if_ok``, ``extract_cookies``, a ``Set-Cookie``
    with an expiry in the past, ``clear_expired_cookies``,
    ``clear_session_cookies``), so overriding those two sees every change.
    """

    def __init__(self, policy: http.cookiejar.CookiePolicy | None = None) -> None:
        super().__init__(policy)
        self.dirty: set[_Key] = set()

    def set_cookie(self, cookie: Cookie) -> None:
        super().set_cookie(cookie)
        self.dirty.add((cookie.domain, cookie.path, cookie.name))

    def clear(self, domain: str | None = None, path: str | None = None,
              name: str | None = None) -> None:
        if name is not None:
            self.dirty.add((domain or "", path or "", name))
        else:
            self.dirty.update(k for k in self._keys()
                              if (domain is None or k[0] == domain)
                              and (path is None or k[1] == path))
        super().clear(domain, path, name)

    def _keys(self) -> Iterator[_Key]:
        for domain, paths in self._cookies.items():  # type: ignore[attr-defined]
            for path, names in paths.items():
                for name in names:
                    yield domain, path, name

    def get(self, key: _Key) -> Cookie | None:
        domain, path, name = key
        return self._cookies.get(domain, {}).get(path, {}).get(name)  # type: ignore[attr-defined, no-any-return]


class SessionJar:
    """One session's Scrapy ``CookieJar``, and what Redis holds of it."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.jar = CookieJar()
        self._tracker = _TrackingCookieJar(self.jar.policy)
        self.jar.jar = self._tracker
        self._written: dict[str, bytes] = {}  # field -> cookie JSON as Redis has it

    def load(self, entries: Iterable[JarEntry]) -> JarLoad:
        """Mount the cookies of a jar read from Redis (:meth:`SessionStore.load_jar
        <statecrawl.sessions.store.SessionStore.load_jar>`).

        Returns the fields of expired cookies (to delete) and the fields that
        could not be rebuilt (to quarantine); neither is mounted.
        """
        now = time.time()
        out = JarLoad([], [])
        for entry in entries:
            try:
                field, cookie, body = _rebuild(entry)
                expired = cookie.is_expired(now)
            except Exception as exc:  # noqa: BLE001 - whatever one field does, it costs that field
                out.poison.append(BadCookie(entry, poison_reason(exc)))
                continue
            if expired:
                out.expired.append(field)
                continue
            http.cookiejar.CookieJar.set_cookie(self._tracker, cookie)  # not a change
            self._written[field] = body
        return out

    @property
    def dirty(self) -> bool:
        return bool(self._tracker.dirty)

    def take_changes(self) -> JarChanges:
        """The writes that bring Redis up to date; call :meth:`written` once they are."""
        keys, self._tracker.dirty = self._tracker.dirty, set()
        sets: dict[str, bytes] = {}
        deletes: list[str] = []
        for key in keys:
            field = jar_field(*key)
            cookie = self._tracker.get(key)
            if cookie is None:
                if field in self._written:
                    deletes.append(field)
                continue
            body = dumps(cookie_to_dict(cookie), "cookie")
            if self._written.get(field) != body:
                sets[field] = body
        return JarChanges(sets, deletes)

    def written(self, changes: JarChanges) -> None:
        self._written.update(changes.sets)
        for field in changes.deletes:
            self._written.pop(field, None)

    def unwritten(self, changes: JarChanges) -> None:
        """The write failed: the same cookies are changes again (their current value)."""
        for field in [*changes.sets, *changes.deletes]:
            self._tracker.dirty.add(_key_of(field))

    def __len__(self) -> int:
        return len(self.jar)


def _key_of(field: str) -> _Key:
    domain, path, name = loads(field, "cookie key")
    return str(domain), str(path), str(name)
