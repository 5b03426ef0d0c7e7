"""The item statecrawl produces for every page, fetched or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Page"]


@dataclass
class Page:
    """One page of a crawl. ``error`` is ``None`` or ``{"type": ..., "message": ...}``."""

    url: str
    crawl_id: str
    fetched_at: str
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    title: str | None = None
    description: str | None = None
    language: str | None = None
    canonical: str | None = None
    open_graph: dict[str, str] = field(default_factory=dict)
    twitter: dict[str, str] = field(default_factory=dict)
    published: str | None = None
    author: str | None = None
    markdown: str = ""  # the "markdown" format (the default)
    html: str | None = None  # the "html" format: cleaned main-content HTML
    raw_html: str | None = None  # the "raw_html" format: the page as fetched
    links: list[dict[str, str]] = field(default_factory=list)  # {"url", "text"}, deduplicated
    renderer: str = "http"  # "http" or "browser": what fetched the page
    screenshot: str | None = None  # a full-page PNG's path (rendered pages, -a screenshot=true)
    depth: int = 0
    error: dict[str, Any] | None = None
