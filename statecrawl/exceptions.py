"""Errors statecrawl raises.

::

    StatecrawlError                 base of everything below
    ├── ConfigError                 a setting or argument is wrong; the message says which and how to fix it
    ├── RedisUnavailable            Redis cannot be reached (or started, for the embedded one)
    ├── SerializationError          a value cannot be written to, or read from, the shared store as plain JSON
    ├── SecretKeyError              a stored secret cannot be opened with this worker's STATECRAWL_SECRET_KEY
    ├── CrawlStateLost              Redis no longer has the crawl a worker joined (restarted empty, flushed)
    ├── LoginError                  the spider's login form was submitted and the site did not log it in
    └── AddressRefused              the net guard refused to connect to an address (loopback, private, metadata); not retried
"""

from __future__ import annotations

__all__ = [
    "AddressRefused", "ConfigError", "CrawlStateLost", "LoginError", "RedisUnavailable", "SecretKeyError", "SerializationError",
    "StatecrawlError",
]


class StatecrawlError(Exception):
    """Base class of all statecrawl errors."""


class ConfigError(StatecrawlError):
    """A setting or a spider/CLI argument is invalid."""


class RedisUnavailable(StatecrawlError):
    """Redis cannot be reached, or the embedded Redis cannot be started."""


class SerializationError(StatecrawlError):
    """A request, item or stored value is not plain JSON data."""


class SecretKeyError(StatecrawlError):
    """A stored session secret is encrypted with another key, or not encrypted while a key is set."""


class CrawlStateLost(StatecrawlError):
    """The crawl's state is gone from Redis, or is another crawl's, while workers ran."""


class LoginError(StatecrawlError):
    """Submitting the login form did not log in (wrong credentials, changed form, a CAPTCHA)."""


class AddressRefused(StatecrawlError):
    """A request's host is, or resolves to, an address the net guard refuses (``STATECRAWL_NET_GUARD``).

    The message says which address and why: ``refused: 127.0.0.1 is loopback
    (STATECRAWL_NET_ALLOW to allow)``. Not an ``IgnoreRequest``, so a spider's
    errback sees it (the ``site`` spider records the page with this error);
    not in ``RETRY_EXCEPTIONS``, so it is not retried.
    """
