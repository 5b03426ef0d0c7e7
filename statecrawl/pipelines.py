"""Item pipelines: keep every item in Redis, and write Markdown files.

* :class:`RedisItemStore` puts each item in the crawl's ``items`` hash
  through the worker's group commit, before the page's lease is acknowledged,
  so ``statecrawl export`` has every page exactly once.
* :class:`MarkdownFiles` writes ``<STATECRAWL_OUTPUT_DIR>/markdown/<host>/<path>.md``.

JSON Lines output is Scrapy's own FEEDS (see ``settings/``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem, NotConfigured

from statecrawl.exceptions import SerializationError
from statecrawl.output import write_markdown
from statecrawl.serialize import dumps
from statecrawl.state import WorkerState
from statecrawl.store import PendingItem, item_key

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["MarkdownFiles", "RedisItemStore"]

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
        await self.state.open()

    async def close_spider(self) -> None:
        await self.state.flush()

    def process_item(self, item: Any) -> Any:
        data = ItemAdapter(item).asdict()
        try:
            body = dumps(data, "item")
        except SerializationError as exc:
            self.crawler.stats.inc_value("statecrawl/item_unserializable")
            raise DropItem(f"item cannot be stored as JSON: {exc}") from None
        self.state.add_item(PendingItem(item_key(data, body), bool(data.get("error")), body))
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
