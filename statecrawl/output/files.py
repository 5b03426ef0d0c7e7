"""Where a page's Markdown file goes, and what it contains.

Shared by the Markdown files pipeline (as pages are crawled) and by
``statecrawl export`` (from Redis), so both write the same tree:
``<out>/markdown/<host>/<path>.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

__all__ = ["markdown_document", "markdown_relpath", "write_markdown"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_SEGMENT = 120


def _segment(text: str) -> str:
    seg = _UNSAFE.sub("_", text).strip("._") or "_"
    if len(seg) > _MAX_SEGMENT:
        seg = seg[:100] + "-" + hashlib.sha1(seg.encode()).hexdigest()[:12]
    return seg


def markdown_relpath(url: str) -> PurePosixPath:
    """``markdown/<host>/<path>.md`` for *url*, safe on any filesystem.

    ``/`` and ``/dir/`` become ``index.md`` files, a trailing ``.html`` or
    ``.htm`` is dropped, a query string adds a short hash, and no segment can
    be ``..`` or absolute.
    """
    parts = urlsplit(url)
    host = _segment(parts.netloc.lower() or "unknown-host")
    segments = [s for s in parts.path.split("/") if s]
    if not segments or parts.path.endswith("/"):
        segments.append("index")
    last = re.sub(r"\.html?$", "", segments[-1], flags=re.IGNORECASE) or "index"
    if parts.query:
        last += "_" + hashlib.sha1(parts.query.encode()).hexdigest()[:10]
    segments[-1] = last
    # ".md" is appended, not swapped for a suffix: /v1.2 and /v1.3 must not share a file
    return PurePosixPath("markdown", host, *(_segment(s) for s in segments[:-1]),
                         _segment(segments[-1]) + ".md")


def markdown_document(item: dict[str, Any]) -> str:
    """The file body: a small YAML front matter, then the page's Markdown."""
    front = {k: item.get(k) for k in ("url", "title", "fetched_at")}
    lines = ["---"] + [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in front.items()]
    return "\n".join(lines) + "\n---\n\n" + (item.get("markdown") or "").rstrip() + "\n"


def write_markdown(out_dir: Path, item: dict[str, Any]) -> bool:
    """Write *item*'s Markdown file under *out_dir*; False if it has no Markdown."""
    url, markdown = item.get("url"), item.get("markdown")
    if not (isinstance(url, str) and url and markdown):
        return False
    path = out_dir / markdown_relpath(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_document(item), encoding="utf-8")
    return True
