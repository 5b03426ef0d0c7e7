"""Seeing a crawl: the facts ``statecrawl status``, ``/metrics`` and the live page show.

* ``snapshot`` (``crawl_snapshot``: one crawl's facts, JSON-ready);
* ``metrics`` (``exposition``: every crawl of a Redis in Prometheus' text format,
  read on each scrape), ``_families`` (every metric it exports, and how a snapshot
  maps to them).

Imports point one way: ``observe`` reads through :mod:`statecrawl.frontier`; the CLI and
the API read through ``observe``.
"""

from statecrawl.observe.metrics import MetricsLimits, exposition
from statecrawl.observe.snapshot import SERIES_SECONDS, crawl_snapshot, host_rows, redis_facts

__all__ = ["SERIES_SECONDS", "MetricsLimits", "crawl_snapshot", "exposition", "host_rows",
           "redis_facts"]
