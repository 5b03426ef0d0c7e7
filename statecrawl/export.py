"""``statecrawl export``: a crawl's pages from Redis to ``pages.jsonl`` and Markdown files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import NamedTuple

from statecrawl.output import write_markdown
from statecrawl.store import CrawlStore

__all__ = ["ExportResult", "export_crawl"]


class ExportResult(NamedTuple):
    pages: int
    failed: int
    markdown_files: int


async def export_crawl(store: CrawlStore, out: Path) -> ExportResult:
    """Write every stored item once, ``pages.jsonl`` sorted by URL.

    Items are streamed once: Markdown files are written and the JSON lines
    spooled to a temporary file as they arrive; only (url, offset) pairs are
    kept in memory and sorted, then the lines are copied into ``pages.jsonl``
    in URL order, which replaces any previous file whole.
    """
    out.mkdir(parents=True, exist_ok=True)
    index: list[tuple[str, int, int]] = []
    keys: set[str] = set()  # HSCAN may return a key twice while the hash is rehashed
    failed = markdown = 0
    with tempfile.TemporaryFile(dir=out, prefix=".pages-") as spool:
        async for key, item in store.iter_items():
            if key in keys:
                continue
            keys.add(key)
            line = (json.dumps(item, ensure_ascii=False) + "\n").encode()
            item = item if isinstance(item, dict) else {}
            url = item.get("url") if isinstance(item.get("url"), str) else None
            index.append((url or key, spool.tell(), len(line)))
            spool.write(line)
            failed += bool(item.get("error"))
            markdown += write_markdown(out, item)
        index.sort()
        target = out / "pages.jsonl"
        partial = target.with_name(".pages.jsonl.partial")
        with partial.open("wb") as f:
            for _, offset, length in index:
                spool.seek(offset)
                f.write(spool.read(length))
        partial.replace(target)
    return ExportResult(len(index), failed, markdown)
