"""Which URLs a site crawl may follow."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from statecrawl.exceptions import ConfigError

__all__ = ["Scope", "validate_start_url"]


def validate_start_url(url: str | None) -> str:
    """Return *url* if it is an absolute http(s) URL with a host, else raise ConfigError."""
    if not url:
        raise ConfigError("no start URL: pass -a url=https://example.com/")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"invalid start URL {url!r}: expected http(s)://host/...")
    return url.strip()


def _regex(pattern: str | None, name: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid {name} regex {pattern!r}: {exc}") from None


class Scope:
    """Same host as the start URL (or its subdomains), filtered by include/exclude."""

    def __init__(
        self, start_url: str, *, allow_subdomains: bool = False,
        include: str | None = None, exclude: str | None = None,
    ) -> None:
        host = urlsplit(validate_start_url(start_url)).hostname
        assert host is not None
        self.host = host.lower()
        self.allow_subdomains = allow_subdomains
        self.include = _regex(include, "include")
        self.exclude = _regex(exclude, "exclude")

    def host_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https"):
            return False
        return host == self.host or (self.allow_subdomains and host.endswith("." + self.host))

    def allows(self, url: str) -> bool:
        if not self.host_allowed(url):
            return False
        if self.include is not None and not self.include.search(url):
            return False
        return not (self.exclude is not None and self.exclude.search(url))
