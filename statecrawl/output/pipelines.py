"""Item pipelines: keep every item (in Redis or a sink), and write Markdown files.

* :class:`RedisItemStore` puts each item in the crawl's ``items`` hash
  through the worker's group commit, or into the crawl's sink
  (``STATECRAWL_SINK``), before the page's lease is acknowledged, so
  ``statecrawl export`` has every page exactly once.
* :class:`MarkdownFiles` writes ``<STATECRAWL_OUTPUT_DIR>/markdown/<host>/<path>.md``.
* :class:`ServiceReplies` pushes a :class:`~statecrawl.output.items.Reply` to
  the caller waiting for it (:mod:`statecrawl.frontier.service`), awaited
  before the lease is acknowledged, and drops it: replies are not stored.

JSON Lines output is Scrapy's own FEEDS (see ``settings/``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured

from statecrawl.exceptions import ConfigError, SerializationError
from statecrawl.frontier.item_codec import LEVEL, pack_item
from statecrawl.frontier.scheduler import LEASE_META_KEY
from statecrawl.frontier.serialize import dumps
from statecrawl.frontier.service import DEFAULT_REPLY_TTL, send_reply
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.frontier.store import PendingItem, error_item_data, item_key
from statecrawl.output.files import write_markdown
from statecrawl.output.items import Reply
from statecrawl.output.sink import (
    Sink,
    SinkError,
    SinkSpec,
    SinkWriter,
    open_sink,
    parse_sink,
    sink_setting,
)

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

    from statecrawl.frontier.store import CrawlStore

__all__ = ["MarkdownFiles", "RedisItemStore", "ServiceReplies"]

logger = logging.getLogger(__name__)

#: Default of ``STATECRAWL_ITEMS_TTL``: a finished crawl's items stay in Redis a week.
DEFAULT_ITEMS_TTL = 7 * 24 * 3600.0


class RedisItemStore:
    """Store items exactly once per item key: in Redis, or in the crawl's sink.

    With the default ``redis`` sink an item goes, compressed, into the group
    commit (the ``items`` hash). With a directory or S3 sink
    (:mod:`statecrawl.output.sink`) the item is written there first, awaited
    here (on the sink's threads), and only then does its key go into the
    group commit, to be counted. Either way the page's lease is acknowledged
    in the same commit as the item or a later one: Scrapy finishes a request
    only after its items have been through the pipelines, and only then does
    the scheduler queue its ack. A sink write that still fails after its
    retries raises :class:`~statecrawl.output.sink.SinkError`: Scrapy reports
    an item error, and the page's lease is given back to the frontier instead
    of acknowledged (fetched again, written again under the same name).

    Settings: ``STATECRAWL_SINK`` (str, default ``redis``),
    ``STATECRAWL_SINK_THREADS`` (int, 8), ``STATECRAWL_SINK_RETRIES`` (int,
    3), ``STATECRAWL_ITEMS_TTL`` (seconds, 604800: how long a finished
    crawl's items stay in Redis; 0 = for ever), ``STATECRAWL_ITEMS_ZSTD_LEVEL``
    (int, 15: the compression level, 1-19; compressed on a thread).
    """

    def __init__(self, crawler: Crawler, spec: SinkSpec, sink: Sink | None, *, threads: int,
                 retries: int, items_ttl: float, level: int = LEVEL) -> None:
        self.crawler, self.spec, self.sink = crawler, spec, sink
        self.threads, self.retries, self.items_ttl, self.level = threads, retries, items_ttl, level
        self.state = WorkerState.of(crawler)
        self.writer: SinkWriter | None = None
        self.config_error: ConfigError | None = None  # a bad setting, raised at open
        self.state.open_hooks.append(self._open_sink)
        crawler.signals.connect(self._item_error, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisItemStore:
        settings = crawler.settings
        if not settings.getbool("STATECRAWL_STORE_ITEMS", True):
            raise NotConfigured("STATECRAWL_STORE_ITEMS is off")
        threads = settings.getint("STATECRAWL_SINK_THREADS", 8)
        level = settings.getint("STATECRAWL_ITEMS_ZSTD_LEVEL", LEVEL)
        try:
            if not 1 <= level <= 19:
                raise ConfigError(f"STATECRAWL_ITEMS_ZSTD_LEVEL must be 1 to 19, got {level}")
            spec = parse_sink(sink_setting(settings))
        except ConfigError as exc:  # said in one line when the worker opens (config_error)
            spec, error = SinkSpec("redis", "redis"), exc
        else:
            error = None
        store = cls(crawler, spec, None, threads=threads,
                    retries=max(0, settings.getint("STATECRAWL_SINK_RETRIES", 3)),
                    items_ttl=settings.getfloat("STATECRAWL_ITEMS_TTL", DEFAULT_ITEMS_TTL),
                    level=level)
        store.config_error = error
        return store

    async def _open_sink(self, store: CrawlStore) -> None:
        """Record the crawl's sink (its first worker's), refuse another, check it is usable."""
        if self.config_error is not None:
            raise self.config_error
        recorded = await store.record_sink(self.spec.url)
        if recorded != self.spec.url:
            raise ConfigError(f"crawl {store.crawl_id!r} keeps its items in the sink "
                              f"{recorded!r}; this worker's STATECRAWL_SINK is "
                              f"{self.spec.url!r}: give every worker the same sink")
        if self.sink is None and self.spec.kind != "redis":  # botocore reads its models: a thread
            self.sink = await asyncio.to_thread(open_sink, self.spec, self.crawler.settings,
                                                self.threads)
        if self.sink is not None:
            await asyncio.to_thread(self.sink.check, store.crawl_id)
            self.writer = SinkWriter(self.sink, store.crawl_id, threads=self.threads,
                                     retries=self.retries)

    async def open_spider(self) -> None:
        try:
            await self.state.open()
        except CloseSpider:
            pass  # the worker could not join the crawl; the scheduler closes the spider

    async def close_spider(self) -> None:
        await self.state.flush()
        store = self.state.store
        if self.spec.kind == "redis" and self.items_ttl > 0 and store is not None:
            try:
                await store.expire_items(self.items_ttl)
            except RETRY_ERRORS as exc:
                logger.warning("statecrawl: could not set the items' expiry (%s)", exc)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)

    async def process_item(self, item: Any) -> Any:
        data = ItemAdapter(item).asdict()
        try:
            body = dumps(data, "item")
        except SerializationError as exc:
            self.crawler.stats.inc_value("statecrawl/item_unserializable")
            self.state.count("items_unserializable")
            raise DropItem(f"item cannot be stored as JSON: {exc}") from None
        key = item_key(data, body)
        failed = bool(data.get("error"))
        limit = self.state.max_item_bytes
        if len(body) > limit:
            # Redis refuses values over its proto-max-bulk-len, and a retry cannot
            # change that: the page is recorded as failed, with why.
            message = (f"the item is {len(body)} bytes as JSON, over the {limit} bytes a "
                       "stored item may have (STATECRAWL_MAX_ITEM_BYTES, Redis' "
                       "proto-max-bulk-len)")
            logger.error("statecrawl: %s: %s; storing an error item instead", key[:200], message)
            self.crawler.stats.inc_value("statecrawl/items_too_large")
            self.state.count("items_too_large")
            body, failed = dumps(error_item_data(data, "ItemTooLarge", message), "item"), True
        # off the reactor: zstd releases the GIL, so this runs beside the crawl
        packed = await asyncio.to_thread(pack_item, body, self.level)
        if self.writer is None:
            self.state.add_item(PendingItem(key, failed, packed))
            return item
        stats = self.crawler.stats
        try:
            attempts = await self.writer.write(key, packed)
        except SinkError as exc:
            stats.inc_value("statecrawl/sink/failed")
            self.state.count("sink_failed")
            logger.error("statecrawl: could not write the item %s to the sink %s: %s; its "
                         "page goes back to the frontier", key[:200], self.spec.url, exc)
            raise
        stats.inc_value("statecrawl/sink/written")
        stats.inc_value("statecrawl/sink/bytes", len(packed))
        if attempts > 1:
            stats.inc_value("statecrawl/sink/retried", attempts - 1)
        self.state.add_item(PendingItem(key, failed, b"", in_sink=True))
        return item

    def _item_error(self, item: Any, response: Any, spider: Any, failure: Failure) -> None:
        if not failure.check(SinkError):
            return
        request = getattr(response, "request", None)
        lease = request.meta.get(LEASE_META_KEY) if request is not None else None
        if lease is None:
            logger.error("statecrawl: the item %r was not stored and its request holds no "
                         "lease to give back", ItemAdapter(item).get("url"))
            return
        self.state.withhold(lease)


class MarkdownFiles:
    """Write each item's ``markdown`` with a front matter under the output dir."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MarkdownFiles:
        out = crawler.settings.get("STATECRAWL_OUTPUT_DIR")
        if not out:
            raise NotConfigured("STATECRAWL_OUTPUT_DIR is empty")
        return cls(Path(out))

    def process_item(self, item: Any) -> Any:
        write_markdown(self.out_dir, ItemAdapter(item).asdict())
        return item


class ServiceReplies:
    """Push each :class:`~statecrawl.output.items.Reply` to its caller, then drop it.

    Runs before the other pipelines (they never see a reply). The push is
    awaited here, so it reaches Redis before the request's lease is
    acknowledged (the exactly-once argument: :mod:`statecrawl.frontier.service`).
    Through a Redis outage it is retried for up to ``STATECRAWL_STOP_TIMEOUT``
    s; a reply that cannot be pushed is logged and the caller times out.
    Setting ``STATECRAWL_SERVICE_REPLY_TTL`` (float, default 60): seconds an
    unread reply is kept.
    """

    def __init__(self, crawler: Crawler, ttl: float) -> None:
        self.crawler, self.ttl = crawler, ttl
        self.state = WorkerState.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ServiceReplies:
        return cls(crawler, crawler.settings.getfloat("STATECRAWL_SERVICE_REPLY_TTL",
                                                      DEFAULT_REPLY_TTL))

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, Reply):
            return item
        stats = self.crawler.stats
        try:
            body = dumps(item.data, "reply")
        except SerializationError as exc:
            body = dumps({"error": {"type": "SerializationError", "message": str(exc)[:500]}},
                         "reply")
        await self._push(item.request_id, body)
        stats.inc_value("statecrawl/service_replies")
        raise DropItem("service reply sent", log_level="DEBUG")

    async def _push(self, request_id: str, body: bytes) -> None:
        store, client = self.state.store, self.state.client
        delay = 0.1
        for _ in range(100):
            if store is None or client is None:
                break
            try:
                if not await send_reply(client, store, request_id, body, self.ttl):
                    self.crawler.stats.inc_value("statecrawl/service_replies_unclaimed")
                return
            except RETRY_ERRORS as exc:
                if self.state.stop.passed():
                    break
                logger.warning("statecrawl: cannot push the reply to %s yet (%s); retrying",
                               request_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        logger.error("statecrawl: could not push the reply to service request %s", request_id)
