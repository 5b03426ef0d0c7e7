"""Feed URI parameters: lets FEEDS paths use ``%(crawl_id)s``."""

from __future__ import annotations

from typing import Any

__all__ = ["uri_params"]


def uri_params(params: dict[str, Any], spider: Any) -> dict[str, Any]:
    return {**params, "crawl_id": getattr(spider, "crawl_id", None) or spider.name}
