"""scrapy-redis projects on statecrawl: its connection settings and its scheduler switches.

A scrapy-redis project keeps its settings when it moves to statecrawl's
scheduler; this module reads the ones that still mean something:

* **Which Redis.** scrapy-redis' spiders and ``RedisPipeline`` connect with
  ``scrapy_redis.connection.get_redis_from_settings``: ``REDIS_PARAMS``,
  overridden by ``REDIS_URL``, ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``
  (each when set and not empty), and a URL's own parts override the rest
  (redis-py's ``from_url``). :func:`scrapy_redis_url` gives the same server
  as one URL, so the frontier lives where the start URLs and items do. With
  none of them set, a *scrapy-redis project* (:func:`uses_scrapy_redis`)
  talks to scrapy-redis' default, :data:`SCRAPY_REDIS_DEFAULT_URL`, and so
  does statecrawl, rather than its embedded Redis.
* **What survives a crawl.** ``SCHEDULER_FLUSH_ON_START`` and
  ``SCHEDULER_PERSIST`` (:class:`Lifecycle`), mapped onto durable crawls: a
  flush on start only when no other worker is live in the crawl, and
  ``SCHEDULER_PERSIST=False`` forgets the crawl's frontier and dupefilter
  only once the crawl has *finished* -- never when a worker stops.

Client options in ``REDIS_PARAMS`` (timeouts, ``retry_on_timeout``,
``encoding``, ``decode_responses``, ``redis_cls``) configure scrapy-redis'
own client; statecrawl's connection keeps its own (see
:mod:`statecrawl.frontier.connection`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import RedisError

from statecrawl.exceptions import ConfigError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    from statecrawl.frontier.store import CrawlStore

__all__ = ["SCRAPY_REDIS_DEFAULT_URL", "Lifecycle", "is_scrapy_redis_spider", "say_joined",
           "say_nothing_new",
           "scrapy_redis_url", "uses_scrapy_redis", "warn_if_split"]

logger = logging.getLogger(__name__)

#: Where scrapy-redis connects when nothing is configured (redis-py's defaults).
SCRAPY_REDIS_DEFAULT_URL = "redis://localhost:6379/0"

#: scrapy-redis' setting -> redis-py keyword (scrapy_redis.connection.SETTINGS_PARAMS_MAP).
_SETTINGS_PARAMS = (("REDIS_URL", "url"), ("REDIS_HOST", "host"), ("REDIS_PORT", "port"),
                    ("REDIS_DB", "db"))
#: Keywords that choose the server or the credentials: any of them means "configured".
_SERVER_KEYS = frozenset({"url", "host", "port", "db", "unix_socket_path", "path", "username",
                          "password", "ssl"})
#: TLS keywords carried over as URL query arguments (redis-py passes them on).
_TLS_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
             "ssl_check_hostname", "ssl_min_version")


def _params(settings: BaseSettings | Mapping[str, Any]) -> dict[str, Any]:
    """The keywords scrapy-redis would pass to its client, server-related ones only matter."""
    getdict = getattr(settings, "getdict", None)
    raw = getdict("REDIS_PARAMS") if getdict is not None else settings.get("REDIS_PARAMS")
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"REDIS_PARAMS must be a dict, not {type(raw).__name__}")
    params = dict(raw or {})
    for setting, keyword in _SETTINGS_PARAMS:
        value = settings.get(setting)
        if value:  # scrapy-redis skips empty values too
            params[keyword] = value
    return params


def scrapy_redis_url(settings: BaseSettings | Mapping[str, Any]) -> str | None:
    """The server scrapy-redis connects to, as a URL; ``None`` if its settings name none.

    ``REDIS_URL`` alone is returned unchanged; otherwise the URL is built from
    the merged keywords (host, port, db, username, password, TLS, unix socket).
    """
    params = _params(settings)
    if not params.keys() & _SERVER_KEYS:
        return None
    url = params.pop("url", None)
    if url is not None:
        url = str(url)
        if not (params.keys() & (_SERVER_KEYS | set(_TLS_KEYS))):
            return url
        try:
            params.update(parse_url(url))  # the URL's parts win, as in redis-py's from_url
        except ValueError as exc:
            raise ConfigError(f"invalid REDIS_URL: {exc}") from None
    return _build_url(params)


def _build_url(params: Mapping[str, Any]) -> str:
    user, password = params.get("username"), params.get("password")
    auth = ""
    if password:
        auth = f"{quote(str(user or ''), safe='')}:{quote(str(password), safe='')}@"
    elif user:
        auth = f"{quote(str(user), safe='')}@"
    try:
        db = int(params.get("db") or 0)
        port = int(params.get("port") or 6379)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid REDIS_PORT / REDIS_DB: {exc}") from None
    query = {k: str(params[k]) for k in _TLS_KEYS if params.get(k) is not None}
    path = params.get("path") or params.get("unix_socket_path")
    if params.get("connection_class") is UnixDomainSocketConnection or path:
        if db:
            query["db"] = str(db)
        tail = f"?{urlencode(query)}" if query else ""
        return f"unix://{auth}{quote(str(path))}{tail}"
    ssl = params.get("connection_class") is SSLConnection or bool(params.get("ssl"))
    host = str(params.get("host") or "localhost")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    tail = f"?{urlencode(query)}" if query else ""
    return f"{'rediss' if ssl else 'redis'}://{auth}{host}:{port}/{db}{tail}"


def is_scrapy_redis_spider(spider: object) -> bool:
    """A spider reading start URLs from Redis the scrapy-redis way (``RedisMixin``)."""
    return all(hasattr(spider, a) for a in ("redis_key", "make_request_from_data", "fetch_data"))


def uses_scrapy_redis(settings: BaseSettings | Mapping[str, Any], spider: object = None) -> bool:
    """True when scrapy-redis components run in this crawler (its spider, pipeline, stats...)."""
    if spider is not None and is_scrapy_redis_spider(spider):
        return True
    getdict = getattr(settings, "getdict", None)
    pipelines = getdict("ITEM_PIPELINES") if getdict is not None else (
        settings.get("ITEM_PIPELINES") or {})
    names = [str(getattr(k, "__module__", k)) for k in pipelines]
    names += [str(settings.get(s) or "") for s in ("STATS_CLASS", "SCHEDULER", "DUPEFILTER_CLASS")]
    return any(name.startswith("scrapy_redis") for name in names)


def warn_if_split(settings: BaseSettings, spider: object, url: str, shown: str) -> None:
    """Warn when scrapy-redis' components will not use the Redis this worker uses."""
    if (url != SCRAPY_REDIS_DEFAULT_URL and scrapy_redis_url(settings) is None
            and uses_scrapy_redis(settings, spider)):
        logger.warning(
            "statecrawl: this worker keeps the crawl in Redis %s, but scrapy-redis' spiders and "
            "pipeline read only REDIS_URL / REDIS_HOST / REDIS_PORT / REDIS_PARAMS from the "
            "settings (never the environment) and, with none set, use %s. Set REDIS_URL in the "
            "settings (e.g. REDIS_URL = os.environ.get('REDIS_URL')) so both use one Redis",
            shown, SCRAPY_REDIS_DEFAULT_URL)


_AGAIN = ("To crawl it again from the start, run with -s SCHEDULER_FLUSH_ON_START=True (deletes "
          "its frontier and dupefilter; items are kept) or under another crawl id "
          "(-s STATECRAWL_CRAWL_ID=...)")


def say_joined(crawl_id: str, status: Mapping[str, Any]) -> bool:
    """Log what a worker joins (*status*: :meth:`CrawlStore.status`); True if the crawl was
    already finished, and not forgotten: then the log says how to crawl it again."""
    if status["state"] == "finished" and not status["forgotten"]:
        logger.info("statecrawl: crawl %r is already finished (%d pages done): pages it has seen "
                    "are not fetched again (start requests included; URLs pushed to a "
                    "scrapy-redis spider's key excepted). %s", crawl_id, status["done"], _AGAIN)
        return True
    if status["queued"] or status["in_flight"] or status["done"]:
        logger.info("statecrawl: joining crawl %r (%d queued, %d in flight, %d done)",
                    crawl_id, status["queued"], status["in_flight"], status["done"])
    return False


def say_nothing_new(crawl_id: str) -> None:
    """A run that joined a finished crawl and leased nothing: say why nothing happened."""
    logger.warning("statecrawl: nothing to do: crawl %r was already finished and this run "
                   "found nothing new. %s", crawl_id, _AGAIN)


@dataclass(frozen=True)
class Lifecycle:
    """``SCHEDULER_FLUSH_ON_START`` and ``SCHEDULER_PERSIST``, as statecrawl maps them.

    ``persist`` is ``SCHEDULER_PERSIST`` when set; unset, it is scrapy-redis'
    default (``False``) in a scrapy-redis project and statecrawl's (``True``)
    otherwise.
    """

    flush_on_start: bool
    persist: bool
    worker_timeout: float

    @classmethod
    def from_settings(cls, settings: BaseSettings, spider: object, worker_timeout: float,
                      *, epoch: str | None = None) -> Lifecycle:
        """*epoch*: the crawl this worker must join (:func:`~statecrawl.frontier.connection.
        crawl_epoch`), which no ``SCHEDULER_FLUSH_ON_START`` may start over."""
        explicit = settings.get("SCHEDULER_PERSIST")
        persist = (settings.getbool("SCHEDULER_PERSIST") if explicit is not None
                   else not uses_scrapy_redis(settings, spider))
        if explicit is None and not persist:
            logger.info("statecrawl: SCHEDULER_PERSIST is unset, so scrapy-redis' default (False) "
                        "applies: once the crawl has finished, its frontier and dupefilter are "
                        "deleted (items are kept) and the next run crawls every page again. Set "
                        "SCHEDULER_PERSIST=True to keep them")
        flush = settings.getbool("SCHEDULER_FLUSH_ON_START")
        if flush and epoch:
            logger.warning("statecrawl: SCHEDULER_FLUSH_ON_START is ignored: this worker joins a "
                           "crawl started for it (STATECRAWL_CRAWL_EPOCH is set)")
            flush = False
        return cls(flush, persist, worker_timeout)

    async def before_open(self, store: CrawlStore, worker: str) -> None:
        """``SCHEDULER_FLUSH_ON_START``: start the crawl over, unless another worker is in it."""
        if not self.flush_on_start:
            return
        others = await store.flush(worker, self.worker_timeout)
        if others:
            logger.warning(
                "statecrawl: SCHEDULER_FLUSH_ON_START: not flushing crawl %r: %d other worker(s) "
                "are running it (a crawl is flushed only by its first worker, when no other "
                "is live); joining it instead", store.crawl_id, others)
        else:
            logger.info("statecrawl: SCHEDULER_FLUSH_ON_START: deleted crawl %r's frontier, "
                        "dupefilter, stats and spider state before starting (its items and "
                        "sessions are kept)", store.crawl_id)

    async def on_close(self, store: CrawlStore, worker: str, reason: str, timeout: float
                       ) -> None:
        """``SCHEDULER_PERSIST=False``: forget the frontier and dupefilter of a finished crawl."""
        if self.persist or reason != "finished":
            return  # a stopped, cancelled or failed worker keeps the crawl resumable
        try:
            outcome = await asyncio.wait_for(
                store.forget_finished(worker, self.worker_timeout), timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("statecrawl: SCHEDULER_PERSIST=False: could not delete finished crawl "
                           "%r's dupefilter (%s); it is kept", store.crawl_id, exc)
            return
        if outcome == "forgotten":
            logger.info("statecrawl: SCHEDULER_PERSIST=False: crawl %r finished; deleted its "
                        "frontier and dupefilter (items kept), so the next run starts over",
                        store.crawl_id)
        elif outcome == "others":
            logger.info("statecrawl: SCHEDULER_PERSIST=False: other workers are still in crawl "
                        "%r; the last one to finish deletes its dupefilter", store.crawl_id)
