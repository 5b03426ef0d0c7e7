"""Which URLs a crawl may follow, and which a worker may fetch.

Two questions, two classes:

* :class:`Scope` is the ``site`` spider's link filter: the start URL's host
  (or its subdomains), on the start URL's port, then ``include`` /
  ``exclude``.
* :class:`FetchScope` is what a worker enforces on every request it takes
  from the frontier (:mod:`statecrawl.frontier.scheduler`) and where pass-through
  cookies and headers may go (:mod:`statecrawl.sessions.passthrough`). It is built
  from the worker's *own* spider -- its ``scope`` (the ``site`` spider) or
  Scrapy's ``allowed_domains`` -- never from anything read from Redis, so a
  request planted in Redis cannot widen what a worker reaches. Only
  ``http``/``https`` URLs pass, whatever ``dont_filter`` or
  ``allow_offsite`` a stored request carries.

Ports count: ``http://host:8080/`` is another site than ``http://host/``.
A start URL on a default port (80, 443) admits both default ports, so a site
may move between http and https; a start URL with another port admits only
that port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

from statecrawl.exceptions import ConfigError

__all__ = ["FetchScope", "HostRule", "Scope", "UrlScope", "validate_start_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEB_PORTS = frozenset(_DEFAULT_PORTS.values())


class UrlScope(Protocol):
    def allows(self, url: str) -> bool: ...


def validate_start_url(url: str | None) -> str:
    """Return *url* if it is an absolute http(s) URL with a host, else raise ConfigError."""
    if not url:
        raise ConfigError("no start URL: pass -a url=https://example.com/")
    try:
        parts = urlsplit(url.strip())
        _port(parts)
    except ValueError:
        raise ConfigError(f"invalid start URL {url!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"invalid start URL {url!r}: expected http(s)://host/...")
    return url.strip()


def _port(parts: SplitResult) -> int | None:
    """The URL's port, its scheme's default when it names none (raises ValueError if bad)."""
    return parts.port or _DEFAULT_PORTS.get(parts.scheme)


@dataclass(frozen=True)
class HostRule:
    """One host (with its subdomains, if *subdomains*) on the given *ports* (None: any)."""

    host: str
    subdomains: bool = False
    ports: frozenset[int] | None = None

    def matches(self, host: str, port: int | None) -> bool:
        if host != self.host and not (self.subdomains and host.endswith("." + self.host)):
            return False
        return self.ports is None or port in self.ports


def _split(url: str) -> tuple[str, int | None] | None:
    """(host, port) of an http(s) URL, None for anything else or anything malformed."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        return parts.hostname.lower().rstrip("."), _port(parts)
    except ValueError:
        return None


class FetchScope:
    """The hosts a worker may fetch (see the module docstring)."""

    def __init__(self, rules: Iterable[HostRule]) -> None:
        self.rules = tuple(rules)

    def allows(self, url: str) -> bool:
        where = _split(url)
        return where is not None and any(rule.matches(*where) for rule in self.rules)

    def __repr__(self) -> str:
        return f"FetchScope({list(self.rules)!r})"

    @classmethod
    def from_domains(cls, domains: Iterable[str]) -> FetchScope:
        """Scrapy's ``allowed_domains``: each domain and its subdomains; ``host:port`` pins a port."""
        rules = []
        for entry in domains:
            host, _, port = str(entry).strip().lower().rstrip(".").partition(":")
            if host:
                rules.append(HostRule(host, True, frozenset({int(port)}) if port.isdigit() else None))
        return cls(rules)

    @classmethod
    def for_spider(cls, spider: Any) -> FetchScope | None:
        """The scope of *spider*: its ``site``-style ``scope``, else ``allowed_domains``.

        ``None`` when the spider declares neither: the worker then checks only
        that stored requests are http(s).
        """
        scope = getattr(spider, "scope", None)
        if isinstance(scope, Scope):
            return cls([scope.rule])
        domains = getattr(spider, "allowed_domains", None)
        if isinstance(domains, Iterator):  # e.g. filter(...): read once, for Scrapy's offsite too
            domains = spider.allowed_domains = list(domains)
        if domains:
            return cls.from_domains(domains)
        return None


def _regex(pattern: str | None, name: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid {name} regex {pattern!r}: {exc}") from None


class Scope:
    """Same host and port as the start URL (or its subdomains), filtered by include/exclude."""

    def __init__(
        self, start_url: str, *, allow_subdomains: bool = False,
        include: str | None = None, exclude: str | None = None,
    ) -> None:
        parts = urlsplit(validate_start_url(start_url))
        assert parts.hostname is not None
        self.host = parts.hostname.lower().rstrip(".")
        port = _port(parts)
        self.ports = _WEB_PORTS if port in _WEB_PORTS else frozenset({port} if port else ())
        self.allow_subdomains = allow_subdomains
        self.include = _regex(include, "include")
        self.exclude = _regex(exclude, "exclude")

    @property
    def rule(self) -> HostRule:
        return HostRule(self.host, self.allow_subdomains, self.ports)

    def host_allowed(self, url: str) -> bool:
        where = _split(url)
        return where is not None and self.rule.matches(*where)

    def allows(self, url: str) -> bool:
        if not self.host_allowed(url):
            return False
        if self.include is not None and not self.include.search(url):
            return False
        return not (self.exclude is not None and self.exclude.search(url))
