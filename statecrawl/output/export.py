"""``statecrawl export``: a crawl's pages from Redis to ``pages.jsonl`` and Markdown files.

One unreadable item (not JSON, not a JSON object, a field of the wrong type:
written by a buggy or older version, cut short, or crafted) costs that item
only: it is skipped and counted, with its key and the reason, and everything
else is written. The CLI then exits 1, since the export is not the whole
crawl, but every file it wrote is complete.
"""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from statecrawl.frontier.serialize import loads
from statecrawl.frontier.store import CrawlStore
from statecrawl.output.files import write_markdown

__all__ = ["ExportResult", "export_crawl"]

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


def _decode(raw: bytes) -> dict[str, Any]:
    item = loads(raw, "item")
    if not isinstance(item, dict):
        raise ValueError(f"not a JSON object but {type(item).__name__}")
    return item


async def export_crawl(store: CrawlStore, out: Path) -> ExportResult:
    """Write every readable stored item once, ``pages.jsonl`` sorted by URL.

    Items are streamed once (HSCAN of the crawl's items hash): Markdown files
    are written and the JSON lines spooled to a temporary file as they
    arrive; only (url, offset) pairs are kept in memory and sorted, then the
    lines are copied into ``pages.jsonl`` in URL order, which replaces any
    previous file whole. An item that cannot be decoded or written is
    skipped (see the module docstring).
    """
    out.mkdir(parents=True, exist_ok=True)
    index: list[tuple[str, int, int]] = []
    keys: set[bytes] = set()  # HSCAN may return a key twice while the hash is rehashed
    failed = markdown = skipped = 0
    examples: list[tuple[str, str]] = []
    with tempfile.TemporaryFile(dir=out, prefix=".pages-") as spool:
        async for raw_key, raw in store.client.hscan_iter(store.keys.items, count=500):
            if raw_key in keys:
                continue
            keys.add(raw_key)
            key = raw_key.decode("utf-8", "replace")
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
