"""The ``statecrawl`` command (``statecrawl.cli:main``; ``python -m statecrawl.cli``).

* ``main`` (the parser and the small commands), ``crawl`` (``statecrawl
  crawl``), ``common`` (finding Redis, a terminal that may go away),
  ``workers`` (the worker processes), ``progress`` (the progress line and
  supervision), ``worker_settings`` (the workers' Scrapy settings),
  ``serve`` (``statecrawl serve``: the HTTP API in uvicorn processes).

Uses everything else; nothing uses it.
"""

from __future__ import annotations

from statecrawl.cli.crawl import default_crawl_id
from statecrawl.cli.main import build_parser, main

__all__ = ["build_parser", "default_crawl_id", "main"]
