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
    markdown: str = ""
    links: list[str] = field(default_factory=list)
    renderer: str = "http"
    depth: int = 0
    error: dict[str, Any] | None = None
