"""Where statecrawl's Redis is, and how to open a checked connection to it.

Every component that keeps crawl state (scheduler, dupefilter, stats, the CLI)
gets its Redis from here, so the rules are decided once:

* **Which Redis.** ``STATECRAWL_REDIS_URL`` wins over ``REDIS_URL`` (the one
  shared name users already set for other tools), settings win over the
  environment, and an empty string counts as unset so ``REDIS_URL=`` in a
  ``.env`` file does not point statecrawl at nothing. scrapy-redis' own
  settings (``REDIS_URL``, ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``,
  ``REDIS_PARAMS``) are read as scrapy-redis reads them
  (:func:`statecrawl.frontier._scrapy_redis.scrapy_redis_url`), so the
  frontier is on the server its spiders and pipeline use. With no URL at all
  the embedded local Redis (:mod:`statecrawl.frontier.embedded`) is used, so
  a first crawl works without any setup and can still be resumed -- except
  in a scrapy-redis project, which uses scrapy-redis' default server
  (``redis://localhost:6379/0``), as its spiders and pipeline do.
* **Fail early and clearly.** :func:`connect` PINGs before returning, so a
  wrong URL surfaces as one :class:`~statecrawl.exceptions.RedisUnavailable`
  saying where it tried and how to fix it, not as a traceback from the
  scheduler minutes later. The first PING is tried once, without redis-py's
  retry loop, so an unreachable host costs one connect timeout, not eleven.
* **Say what is wrong.** A refused password (``NOAUTH``, ``WRONGPASS``) is
  "authentication failed", pointing at the password in the URL, not at a
  Redis that is not running.
* **One or many nodes.** ``redis+cluster://host:port[,host:port...]``
  (``rediss+cluster://`` with TLS) names a Redis Cluster by a seed list;
  :func:`redis_from_url` builds redis-py's ``RedisCluster`` for it and
  ``Redis`` for any other URL, so every client (workers, heartbeat,
  watchdog, work listener, sessions, CLI, API) takes either form. The URL
  form and what differs on a cluster: :mod:`statecrawl.frontier.cluster`.
  A cluster URL is a URL like any other here: it never starts the embedded
  Redis, which runs only when no URL is set.
* **No secrets in logs.** URLs may carry a password (``redis://:pw@host``,
  ``?password=pw``); every message goes through :func:`redact_url`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from statecrawl.exceptions import ConfigError, RedisUnavailable
from statecrawl.frontier import embedded
from statecrawl.frontier.cluster import cluster_client, is_cluster, is_cluster_url
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier._scrapy_redis import (
    SCRAPY_REDIS_DEFAULT_URL,
    scrapy_redis_url,
    uses_scrapy_redis,
    warn_if_split,
)

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = [
    "HEALTH_CHECK_INTERVAL",
    "URL_SETTINGS",
    "connect",
    "connect_sync",
    "crawl_id_for",
    "redact_url",
    "resolve_redis",
    "redis_from_url",
    "redis_url_from_settings",
    "redis_url_source",
    "resolve_redis_url",
    "worker_redis",
]

logger = logging.getLogger(__name__)

#: Setting / environment variable names holding the Redis URL, highest priority first.
URL_SETTINGS: tuple[str, ...] = ("STATECRAWL_REDIS_URL", "REDIS_URL")

#: Seconds a pooled connection may sit idle before it is PINGed on reuse: long
#: crawls keep connections through NAT/load-balancer idle cut-offs.
HEALTH_CHECK_INTERVAL = 30

#: Seconds to wait for the TCP/unix connect before declaring Redis unreachable.
CONNECT_TIMEOUT = 5

DEFAULT_DATA_DIR = ".statecrawl"

_REDACTED = "***"
_SECRET_QUERY_KEYS = frozenset({"password", "pass", "pwd"})


def redis_url_source(
    settings: BaseSettings | Mapping[str, Any], spider: object = None
) -> tuple[str, str] | None:
    """(the Redis URL configured, where it comes from), or ``None`` when none is.

    Settings are checked before the environment so a project or ``-s`` option
    overrides a stray ``REDIS_URL`` exported in the shell: the
    ``STATECRAWL_REDIS_URL`` setting, then scrapy-redis' settings, then the
    ``STATECRAWL_REDIS_URL`` and ``REDIS_URL`` environment variables, then,
    when *settings* or *spider* use scrapy-redis, scrapy-redis' default server.
    """
    value = settings.get("STATECRAWL_REDIS_URL")
    if value:
        return str(value), "the STATECRAWL_REDIS_URL setting"
    url = scrapy_redis_url(settings)
    if url is not None:
        names = [n for n in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PARAMS")
                 if settings.get(n)]
        return url, f"the {'/'.join(names)} setting{'s' if len(names) > 1 else ''}"
    for name in URL_SETTINGS:
        value = os.environ.get(name)
        if value:
            return value, f"the {name} environment variable"
    if uses_scrapy_redis(settings, spider):
        return SCRAPY_REDIS_DEFAULT_URL, ("scrapy-redis' default: this project uses scrapy-redis, "
                                          "and sets no Redis")
    return None


def redis_url_from_settings(
    settings: BaseSettings | Mapping[str, Any], spider: object = None
) -> str | None:
    """Return the configured Redis URL, or ``None`` when the user set none (see
    :func:`redis_url_source`)."""
    found = redis_url_source(settings, spider)
    return None if found is None else found[0]


def resolve_redis_url(
    settings: BaseSettings | Mapping[str, Any], data_dir: str | Path | None = None,
    spider: object = None,
) -> str:
    """Return the Redis URL to use, starting the embedded Redis when none is set.

    ``data_dir`` (else the ``STATECRAWL_DATA_DIR`` setting, else
    ``.statecrawl``) is where the embedded server keeps its socket and AOF;
    it is ignored when a URL is configured.
    """
    return resolve_redis(settings, data_dir, spider)[0]


def resolve_redis(
    settings: BaseSettings | Mapping[str, Any], data_dir: str | Path | None = None,
    spider: object = None,
) -> tuple[str, str]:
    """:func:`resolve_redis_url`, with where the URL comes from (for the log)."""
    found = redis_url_source(settings, spider)
    if found is not None:
        return found
    chosen = data_dir or settings.get("STATECRAWL_DATA_DIR") or DEFAULT_DATA_DIR
    return embedded.ensure_embedded_redis(chosen), f"the embedded Redis (data dir {chosen})"


def worker_redis(settings: BaseSettings, spider: object, worker_id: str) -> str:
    """The Redis a worker uses (:func:`resolve_redis`), said once in the log, with a warning
    when scrapy-redis' own components would use another one."""
    url, source = resolve_redis(settings, None, spider)
    logger.info("statecrawl: worker %s uses Redis %s (from %s)", worker_id, redact_url(url), source)
    warn_if_split(settings, spider, url, redact_url(url))
    return url


def crawl_id_for(crawler: Crawler) -> str:
    """The crawl a worker serves: ``STATECRAWL_CRAWL_ID``, the spider's ``crawl_id``, or its
    name."""
    spider = crawler.spider
    crawl_id = (
        crawler.settings.get("STATECRAWL_CRAWL_ID")
        or getattr(spider, "crawl_id", None)
        or (spider.name if spider is not None else None)
    )
    if not crawl_id:
        raise ConfigError("no crawl id: set STATECRAWL_CRAWL_ID or give the spider a name")
    return validate_crawl_id(str(crawl_id))


def crawl_epoch(settings: BaseSettings) -> str | None:
    """The epoch of the crawl this worker must join: the ``STATECRAWL_CRAWL_EPOCH`` setting,
    else the environment variable of that name (how ``statecrawl crawl`` and ``statecrawl
    worker`` pass it: Scrapy does not read ``STATECRAWL_*`` variables into its settings)."""
    return str(settings.get("STATECRAWL_CRAWL_EPOCH") or os.environ.get("STATECRAWL_CRAWL_EPOCH")
               or "") or None


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe to log.

    A lone userinfo without ``:`` (``redis://secret@host``) is redacted too:
    redis-cli reads it as a password, so it may well be one.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:{_REDACTED}@{hostport}" if sep else f"{_REDACTED}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
                query = urlencode(
                    [
                        (key, _REDACTED if key.lower() in _SECRET_QUERY_KEYS else value)
                        for key, value in pairs
                    ],
                    safe="*",
                )
        if netloc == parts.netloc and query == parts.query:
            return url
        # Not urlunsplit: it drops the empty authority of unix:///path.
        rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
        rebuilt += f"?{query}" if query else ""
        return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        # Unparseable (e.g. a bad port): blank out anything between :// and @.
        return re.sub(r"(?<=://)[^/@]*@", f"{_REDACTED}@", url)


def _secrets(url: str) -> list[str]:
    """Password-like strings in ``url``, to scrub from error text as well."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            user, sep, password = userinfo.partition(":")
            found.append(password if sep else user)
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS]
    except ValueError:
        pass
    return [s for variant in found if variant for s in {variant, unquote(variant)}]


def _auth_failed(exc: BaseException) -> bool:
    """True if *exc* is Redis refusing our credentials (none, or wrong ones)."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))


def _unavailable(url: str, exc: BaseException) -> RedisUnavailable:
    """Build the one error message users see when Redis cannot be reached (or refuses us)."""
    reason = (str(exc) or type(exc).__name__).rstrip(". ")
    for secret in _secrets(url):
        reason = reason.replace(secret, _REDACTED)
    if _auth_failed(exc):
        return RedisUnavailable(
            f"authentication failed at Redis {redact_url(url)}: {reason}. Check the password in "
            "REDIS_URL (or --redis-url / STATECRAWL_REDIS_URL), e.g. "
            "REDIS_URL=redis://:PASSWORD@host:6379/0 (or redis://USER:PASSWORD@host:6379/0 "
            "with an ACL user)."
        )
    return RedisUnavailable(
        f"cannot reach Redis at {redact_url(url)}: {reason}. Is it running? "
        "Set REDIS_URL (or the STATECRAWL_REDIS_URL setting) to a running Redis, "
        "e.g. REDIS_URL=redis://host:6379/0, or leave both unset to use "
        "statecrawl's embedded local Redis."
    )


def _bad_url(url: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"invalid Redis URL {redact_url(url)}: {exc}. Expected redis://[:password@]host:port/db, "
        "rediss://... (TLS), unix:///path/to/redis.sock or, for a Redis Cluster, "
        "redis+cluster://[:password@]host:port[,host:port...] (rediss+cluster:// for TLS)"
    )


def redis_from_url(url: str, *, sync: bool = False, **kwargs: Any) -> Any:
    """A client for *url*, not yet connected: redis-py's ``Redis`` (``redis.asyncio`` unless
    *sync*) or, for a ``redis+cluster://`` URL, its ``RedisCluster``
    (:mod:`statecrawl.frontier.cluster`), with *kwargs*. Every client statecrawl opens is
    built here. A malformed URL is a :class:`ConfigError`; a sync cluster client connects at
    once, and raises ``redis.ConnectionError`` when it cannot."""
    try:
        if is_cluster_url(url):
            return cluster_client(url, sync=sync, **kwargs)
        return (redis.Redis if sync else redis.asyncio.Redis).from_url(url, **kwargs)
    except (ValueError, RedisClusterException) as exc:
        raise _bad_url(url, exc) from exc


def _from_url(url: str, name: str, *, sync: bool) -> Any:
    """statecrawl's client for *url* (sync or asyncio): bytes replies, health checks, a
    bounded connect, *name* as CLIENT SETNAME."""
    return redis_from_url(url, sync=sync, decode_responses=False,
                          health_check_interval=HEALTH_CHECK_INTERVAL,
                          socket_connect_timeout=CONNECT_TIMEOUT, client_name=name)


async def connect(url: str, *, name: str = "statecrawl") -> redis.asyncio.Redis:
    """Open an asyncio Redis client for ``url`` and check it answers PING.

    Responses stay ``bytes`` (``decode_responses=False``) because stored
    values are JSON bytes and fingerprints are binary-safe keys. ``name`` is
    sent as CLIENT SETNAME so ``CLIENT LIST`` shows which worker holds which
    connection. A cluster URL gives a ``redis.asyncio.RedisCluster`` (typed as
    ``Redis``: statecrawl calls only what both have), checked by loading the
    cluster's slot map from the seeds, each tried once, then a PING.
    """
    client = _from_url(url, name, sync=False)
    if is_cluster(client):
        try:
            await client.initialize()
            await client.ping()
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            await client.aclose()
            raise _unavailable(url, exc) from exc
        return cast("redis.asyncio.Redis", client)
    retry = client.get_retry()
    client.set_retry(AsyncRetry(NoBackoff(), 0))
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        raise _unavailable(url, exc) from exc
    if retry is not None:
        client.set_retry(retry)
    return cast("redis.asyncio.Redis", client)


def connect_sync(url: str, *, name: str = "statecrawl") -> redis.Redis:
    """Blocking twin of :func:`connect`, for CLI commands run outside the reactor."""
    try:
        client = _from_url(url, name, sync=True)
    except (redis.RedisError, OSError) as exc:  # a sync cluster client connects at once
        raise _unavailable(url, exc) from exc
    if is_cluster(client):
        try:
            client.ping()
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            client.close()
            raise _unavailable(url, exc) from exc
        return cast("redis.Redis", client)
    retry = client.get_retry()
    client.set_retry(Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        raise _unavailable(url, exc) from exc
    if retry is not None:
        client.set_retry(retry)
    return cast("redis.Redis", client)
