"""``statecrawl export``: a crawl's pages from Redis or its sink to ``pages.jsonl`` and Markdown files.

The items are read from where the crawl's workers wrote them: the ``items``
hash (the ``redis`` sink) or the directory or S3 bucket of ``STATECRAWL_SINK``
(:mod:`statecrawl.output.sink`: one object per item key, so each page once).

One unreadable item (not JSON, not a JSON object, a field of the wrong type:
written by a buggy or older version, cut short, or crafted) costs that item
only: it is skipped and counted, with its key and the reason, and everything
else is written. The CLI then exits 1, since the export is not the whole
crawl, but every file it wrote is complete.
"""

from __future__ import annotations

import asyncio
import errno
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

from statecrawl.frontier.item_codec import load_item
from statecrawl.frontier.store import CrawlStore
from statecrawl.output.files import write_markdown
from statecrawl.exceptions import ConfigError
from statecrawl.output.sink import Sink, open_sink, parse_sink

__all__ = ["ExportResult", "crawl_sink", "export_crawl"]

#: How many skipped items are named (key and reason) in an :class:`ExportResult`.
SKIPPED_NAMED = 5
#: Errors writing a file that say the output directory is unusable, not the item.
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES,
                          errno.EPERM})


class ExportResult(NamedTuple):
    pages: int
    failed: int
    markdown_files: int
    skipped: int = 0
    #: (item key, reason) of the first :data:`SKIPPED_NAMED` skipped items.
    skipped_examples: tuple[tuple[str, str], ...] = ()


#: Objects read from a sink at once (each on a thread).
SINK_READ_BATCH = 32


def _decode(raw: bytes) -> dict[str, Any]:
    item = load_item(raw)
    if not isinstance(item, dict):
        raise ValueError(f"not a JSON object but {type(item).__name__}")
    return item


async def crawl_sink(store: CrawlStore, value: str) -> Sink | None:
    """The sink *value* names (``--sink`` / ``STATECRAWL_SINK``), None for ``redis``.

    The sink the crawl recorded is compared, never followed: a crawl whose
    items are elsewhere is a ConfigError that names where."""
    spec = parse_sink(value)
    recorded = await store.client.hget(store.keys.meta, "sink")
    if recorded is not None and recorded.decode() != spec.url:
        raise ConfigError(f"crawl {store.crawl_id!r} keeps its items in the sink "
                          f"{recorded.decode()!r}, not {spec.url!r}: pass --sink "
                          f"{recorded.decode()} (or set STATECRAWL_SINK)")
    return open_sink(spec, {})


async def _redis_items(store: CrawlStore) -> AsyncIterator[tuple[str, bytes]]:
    keys: set[bytes] = set()  # HSCAN may return a key twice while the hash is rehashed
    async for raw_key, raw in store.client.hscan_iter(store.keys.items, count=500):
        if raw_key not in keys:
            keys.add(raw_key)
            yield raw_key.decode("utf-8", "replace"), raw


async def _sink_items(sink: Sink, crawl_id: str) -> AsyncIterator[tuple[str, bytes]]:
    names = await asyncio.to_thread(lambda: sorted(set(sink.names(crawl_id))))
    for at in range(0, len(names), SINK_READ_BATCH):
        batch = names[at:at + SINK_READ_BATCH]
        for name, raw in zip(batch, await asyncio.gather(
                *(asyncio.to_thread(sink.read, name) for name in batch))):
            yield name, raw


async def export_crawl(store: CrawlStore, out: Path, sink: Sink | None = None) -> ExportResult:
    """Write every readable stored item once, ``pages.jsonl`` sorted by URL.

    Items are streamed once (HSCAN of the crawl's items hash, or the sink's
    objects of the crawl, *sink* not None): Markdown files
    are written and the JSON lines spooled to a temporary file as they
    arrive; only (url, offset) pairs are kept in memory and sorted, then the
    lines are copied into ``pages.jsonl`` in URL order, which replaces any
    previous file whole. An item that cannot be decoded or written is
    skipped (see the module docstring).
    """
    out.mkdir(parents=True, exist_ok=True)
    index: list[tuple[str, int, int]] = []
    failed = markdown = skipped = 0
    examples: list[tuple[str, str]] = []
    source = _redis_items(store) if sink is None else _sink_items(sink, store.crawl_id)
    with tempfile.TemporaryFile(dir=out, prefix=".pages-") as spool:
        async for key, raw in source:
            error: Exception | None = None
            try:
                item = _decode(raw)
                line = (json.dumps(item, ensure_ascii=False) + "\n").encode()
                wrote = write_markdown(out, item)
            except OSError as exc:
                if exc.errno in _DISK_ERRORS:
                    raise  # the output dir, not the item: the export cannot go on
                error = exc  # e.g. a name too long for this filesystem
            except Exception as exc:  # noqa: BLE001 - any unreadable item costs that item only
                error = exc
            if error is not None:
                skipped += 1
                if len(examples) < SKIPPED_NAMED:
                    examples.append((key, f"{type(error).__name__}: {error}"[:300]))
                continue
            url = item.get("url") if isinstance(item.get("url"), str) else None
            index.append((url or key, spool.tell(), len(line)))
            spool.write(line)
            failed += bool(item.get("error"))
            markdown += wrote
        index.sort()
        target = out / "pages.jsonl"
        partial = target.with_name(".pages.jsonl.partial")
        with partial.open("wb") as f:
            for _, offset, length in index:
                spool.seek(offset)
                f.write(spool.read(length))
        partial.replace(target)
    return ExportResult(len(index), failed, markdown, skipped, tuple(examples))
