"""Output: the item, and where items go.

* ``items`` (``Page``), ``pipelines`` (``RedisItemStore``, ``MarkdownFiles``),
  ``sink`` (``STATECRAWL_SINK``: items in Redis, a directory or S3),
  ``feeds`` (Scrapy FEEDS parameters), ``files`` (where a page's Markdown file
  goes), ``export`` (``statecrawl export``, from Redis or the sink).

Uses :mod:`statecrawl.frontier` (items are committed with the group commit).
The names of ``files`` are re-exported: ``statecrawl.output.write_markdown``
keeps its path.
"""

from __future__ import annotations

from statecrawl.output.files import markdown_document, markdown_relpath, write_markdown

__all__ = ["markdown_document", "markdown_relpath", "write_markdown"]
