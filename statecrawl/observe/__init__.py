"""Seeing a crawl: the facts ``statecrawl status``, ``/metrics`` and the live page show.

Imports point one way: ``observe`` reads through :mod:`statecrawl.frontier`; the CLI and
the API read through ``observe``.
"""

from statecrawl.observe.snapshot import SERIES_SECONDS, crawl_snapshot, host_rows, redis_facts

__all__ = ["SERIES_SECONDS", "crawl_snapshot", "host_rows", "redis_facts"]
