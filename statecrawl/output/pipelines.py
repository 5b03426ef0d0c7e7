"""Item pipelines: keep every item in Redis, and write Markdown files.

* :class:`RedisItemStore` puts each item in the crawl's ``items`` hash
  through the worker's group commit, before the page's lease is acknowledged,
  so ``statecrawl export`` has every page exactly once.
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
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.serialize import dumps
from statecrawl.frontier.service import DEFAULT_REPLY_TTL, send_reply
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.frontier.store import PendingItem, error_item_data, item_key
from statecrawl.output.files import write_markdown
from statecrawl.output.items import Reply

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["MarkdownFiles", "RedisItemStore", "ServiceReplies"]

logger = logging.getLogger(__name__)


class RedisItemStore:
    """Store items in the crawl's Redis state (exactly once per item key)."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.state = WorkerState.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisItemStore:
        if not crawler.settings.getbool("STATECRAWL_STORE_ITEMS", True):
            raise NotConfigured("STATECRAWL_STORE_ITEMS is off")
        return cls(crawler)

    async def open_spider(self) -> None:
        try:
            await self.state.open()
        except CloseSpider:
            pass  # the worker could not join the crawl; the scheduler closes the spider

    async def close_spider(self) -> None:
        await self.state.flush()

    def process_item(self, item: Any) -> Any:
        data = ItemAdapter(item).asdict()
        try:
            body = dumps(data, "item")
        except SerializationError as exc:
            self.crawler.stats.inc_value("statecrawl/item_unserializable")
            self.state.count("items_unserializable")
            raise DropItem(f"item cannot be stored as JSON: {exc}") from None
        key = item_key(data, body)
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
            body = dumps(error_item_data(data, "ItemTooLarge", message), "item")
            self.state.add_item(PendingItem(key, True, body))
            return item
        self.state.add_item(PendingItem(key, bool(data.get("error")), body))
        return item


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
