"""Every metric ``/metrics`` exports (:data:`SPECS`), and :class:`Sheet`, the rows of one scrape.

A row is a metric name, its label values and a number; :meth:`Sheet.families` turns
the rows into prometheus_client metric families, in :data:`SPECS` order, which
``generate_latest`` renders (label values escaped there: a host or worker id read
from Redis is data, never syntax). :func:`crawl_rows` maps one crawl snapshot
(:func:`statecrawl.observe.crawl_snapshot`) to its rows.

Names follow Prometheus' conventions: ``_total`` counters are the crawl's monotonic
stats (``sc:{id}:stats``); values over a rolling window (:mod:`statecrawl.frontier.rolling`)
are gauges that say so in their name (``..._last_minute``, ``..._per_second{window}``),
since a sum over the last 60 s is not a counter.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from statecrawl.frontier.rolling import LATENCY_BOUNDS

__all__ = ["COUNTER_STATS", "KNOWN_STATES", "MAX_ERROR_TYPES", "SPECS", "Sheet", "crawl_rows",
           "crawls_rows", "shown_state"]

C, H, W = ("crawl",), ("crawl", "host"), ("crawl", "worker")

#: name -> (type, labels, help). The README's metrics table lists each of them.
SPECS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # the Redis and this exporter
    "statecrawl_crawls": ("gauge", ("state",), "Crawls in this Redis by state (running, finished, cancelled, other)."),
    "statecrawl_redis_used_memory_bytes": ("gauge", (), "Redis INFO used_memory."),
    "statecrawl_redis_ping_seconds": ("gauge", (), "Round trip of one PING from this exporter."),
    "statecrawl_redis_script_calls_total": ("counter", (), "Lua script calls (EVALSHA, EVAL, FCALL) since Redis started."),
    "statecrawl_redis_script_seconds_per_call": ("gauge", (), "Mean run time of those scripts (INFO commandstats)."),
    "statecrawl_metrics_crawls_exported": ("gauge", (), "Crawls with series in this scrape."),
    "statecrawl_metrics_crawls_omitted": ("gauge", (), "Crawls left out past STATECRAWL_METRICS_MAX_CRAWLS."),
    "statecrawl_metrics_crawl_errors": ("gauge", (), "Crawls skipped in this scrape: their data in Redis could not be read."),
    "statecrawl_metrics_scrape_duration_seconds": ("gauge", (), "Time this scrape took to read Redis."),
    # one crawl
    "statecrawl_crawl_info": ("gauge", ("crawl", "state", "spider", "dupefilter"), "1 for each exported crawl, with its state."),
    "statecrawl_crawl_progress_ratio": ("gauge", C, "The share of the crawl's limit (requests) admitted and ended; 1 once finished."),
    "statecrawl_pages_total": ("counter", C, "Pages done: leases acknowledged after their output was committed (stats acked)."),
    "statecrawl_items_total": ("counter", C, "Distinct item keys stored (stats items)."),
    "statecrawl_requests_enqueued_total": ("counter", C, "Requests added to the frontier (stats enqueued)."),
    "statecrawl_requests_admitted_total": ("counter", C, "Requests counted against the limit (stats admitted)."),
    "statecrawl_requests_duplicate_total": ("counter", C, "Requests dropped as already seen (stats duplicates)."),
    "statecrawl_requests_limit_dropped_total": ("counter", C, "Requests refused past the limit (stats limit_dropped)."),
    "statecrawl_requests_leased_total": ("counter", C, "Requests leased by workers (stats leased)."),
    "statecrawl_requests_retried_total": ("counter", C, "Retry requests enqueued (stats retried)."),
    "statecrawl_robots_denied_total": ("counter", C, "Requests robots.txt disallowed (stats robots_denied)."),
    "statecrawl_leases_released_total": ("counter", C, "Leases given back by stopping workers (stats released)."),
    "statecrawl_leases_reclaimed_total": ("counter", C, "Leases of dead workers put back (stats reclaimed)."),
    "statecrawl_quarantined_total": ("counter", C, "Stored values moved to the dead-letter list (stats quarantined)."),
    "statecrawl_queued_requests": ("gauge", C, "Requests waiting in the frontier."),
    "statecrawl_leases_in_flight": ("gauge", C, "Requests leased and not yet acknowledged."),
    "statecrawl_lease_oldest_age_seconds": ("gauge", C, "Age of the oldest lease a live worker holds (from heartbeats)."),
    "statecrawl_failed_pages": ("gauge", C, "Pages whose item is an error (the failed set)."),
    "statecrawl_workers": ("gauge", C, "Live workers (a heartbeat in the last 15 s)."),
    "statecrawl_dupefilter_entries": ("gauge", C, "Fingerprints the dupefilter recorded."),
    "statecrawl_bloom_fill_ratio": ("gauge", C, "Estimated fill of the Bloom dupefilter (bloom mode)."),
    "statecrawl_pages_per_second": ("gauge", ("crawl", "window"), "Pages done per second over the last 1m, 5m, 15m."),
    "statecrawl_items_per_second": ("gauge", ("crawl", "window"), "Items per second over the last 1m, 5m, 15m."),
    "statecrawl_fetches_last_minute": ("gauge", C, "Fetch attempts (responses and download errors) in the last minute."),
    "statecrawl_responses_last_minute": ("gauge", ("crawl", "status_class"), "Responses in the last minute by status class (2xx ... 5xx, other)."),
    "statecrawl_errors_last_minute": ("gauge", ("crawl", "stage", "type"), "Exceptions in the last minute: stage download or callback, type the exception class."),
    "statecrawl_response_bytes_last_minute": ("gauge", C, "Response body bytes in the last minute."),
    "statecrawl_ignored_requests_last_minute": ("gauge", C, "Requests dropped unfetched (robots.txt, ...) in the last minute."),
    "statecrawl_fetch_latency_seconds_last_minute_bucket": ("gauge", ("crawl", "le"), "Fetches in the last minute that took at most le seconds (cumulative)."),
    # its hosts (the top STATECRAWL_METRICS_TOP_HOSTS)
    "statecrawl_hosts": ("gauge", C, "Hosts with a politeness budget row (polite crawls)."),
    "statecrawl_host_queued_requests": ("gauge", H, "Requests of the host waiting (polite crawls)."),
    "statecrawl_host_in_flight_requests": ("gauge", H, "Requests of the host in flight (polite crawls)."),
    "statecrawl_host_delay_seconds": ("gauge", ("crawl", "host", "source"), "The host's delay by its source: override, robots, autothrottle."),
    "statecrawl_host_concurrency_limit": ("gauge", H, "The host's own concurrency budget, when it has one."),
    "statecrawl_host_next_slot_seconds": ("gauge", H, "Time until the host's next request may go."),
    "statecrawl_host_backoff_level": ("gauge", H, "The host's backoff level after 429/503 answers (0: none)."),
    "statecrawl_host_fetches_last_minute": ("gauge", H, "Fetch attempts on the host in the last minute."),
    "statecrawl_host_errors_last_minute": ("gauge", H, "Download errors and 5xx of the host in the last minute."),
    # its live workers
    "statecrawl_worker_info": ("gauge", ("crawl", "worker", "host", "pid"), "1 for each live worker, with the machine and process it told."),
    "statecrawl_worker_heartbeat_age_seconds": ("gauge", W, "Time since the worker's last heartbeat."),
    "statecrawl_worker_leases": ("gauge", W, "Leases the worker holds."),
    "statecrawl_worker_oldest_lease_age_seconds": ("gauge", W, "Age of the oldest lease the worker holds (its heartbeat's)."),
}

#: ``_total`` counter -> the field of the crawl's stats hash it reads (0 when absent).
COUNTER_STATS = {
    "statecrawl_pages_total": "acked", "statecrawl_items_total": "items",
    "statecrawl_requests_enqueued_total": "enqueued", "statecrawl_requests_admitted_total": "admitted",
    "statecrawl_requests_duplicate_total": "duplicates",
    "statecrawl_requests_limit_dropped_total": "limit_dropped",
    "statecrawl_requests_leased_total": "leased", "statecrawl_requests_retried_total": "retried",
    "statecrawl_robots_denied_total": "robots_denied", "statecrawl_leases_released_total": "released",
    "statecrawl_leases_reclaimed_total": "reclaimed", "statecrawl_quarantined_total": "quarantined",
}
#: The status classes of the rolling counters, each exported even at 0.
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")
#: Error types kept per crawl and stage; the rest are summed as type ``other``.
MAX_ERROR_TYPES = 20
#: States shown as they are in ``statecrawl_crawls`` and ``statecrawl_crawl_info``; any other: ``other``.
KNOWN_STATES = frozenset({"running", "finished", "cancelled"})

Row = tuple[str, tuple[str, ...], float]


class Sheet:
    """The rows of one scrape, checked against :data:`SPECS` as they are added."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[tuple[str, ...], float]]] = defaultdict(list)

    def add(self, name: str, value: float | int | None, *labels: object) -> None:
        if value is None:
            return
        _kind, names, _help = SPECS[name]
        if len(labels) != len(names):
            raise ValueError(f"{name} takes labels {names}, got {labels!r}")
        number = float(value)  # a non-number from Redis raises here, before the row is kept
        self.rows[name].append((tuple(str(v) for v in labels), number))

    def extend(self, rows: list[Row]) -> None:
        for name, labels, value in rows:
            self.add(name, value, *labels)

    def families(self) -> list[Metric]:
        out: list[Metric] = []
        for name, (kind, labels, text) in SPECS.items():
            rows = self.rows.get(name)
            if not rows:
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, text, labels=labels)
            else:
                family = GaugeMetricFamily(name, text, labels=labels)
            for values, number in rows:
                family.add_metric(values, number)
            out.append(family)
        return out


def shown_state(state: object) -> str:
    return state if isinstance(state, str) and state in KNOWN_STATES else "other"


def _capped(counts: dict[str, int]) -> dict[str, int]:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(top[:MAX_ERROR_TYPES])
    rest = sum(v for _k, v in top[MAX_ERROR_TYPES:])
    if rest:
        kept["other"] = kept.get("other", 0) + rest
    return kept


def _latency(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Cumulative ``(le, count)`` from the rolling ``lat:<le>`` counts (each bucket its own)."""
    total, out = 0, []
    for bound in (*LATENCY_BOUNDS, float("inf")):
        total += int(counts.get("+Inf" if bound == float("inf") else f"{bound:g}", 0))
        out.append((floatToGoString(bound), total))
    return out


def crawl_rows(snap: dict[str, Any]) -> list[Row]:
    """The rows of one crawl (every label value a string; raises on a malformed snapshot)."""
    cid = snap["crawl_id"]
    rows: list[Row] = []

    def add(name: str, value: Any, *labels: object) -> None:
        if value is not None:
            rows.append((name, (cid, *(str(v) for v in labels)), value))

    dupe = snap["dupefilter"]
    add("statecrawl_crawl_info", 1, shown_state(snap["state"]), snap.get("spider") or "",
        dupe["mode"])
    add("statecrawl_crawl_progress_ratio", snap.get("progress"))
    stats = snap["stats"]
    for name, field in COUNTER_STATS.items():
        add(name, stats.get(field, 0))
    add("statecrawl_queued_requests", snap["queued"])
    add("statecrawl_leases_in_flight", snap["in_flight"])
    add("statecrawl_lease_oldest_age_seconds", snap["leases"]["oldest_age"])
    add("statecrawl_failed_pages", snap["failed"])
    add("statecrawl_workers", len(snap["workers"]))
    add("statecrawl_dupefilter_entries", dupe["entries"])
    add("statecrawl_bloom_fill_ratio", dupe["bloom_fill"])
    for kind in ("pages", "items"):
        for window, rate in snap["rates"][f"{kind}_per_s"].items():
            add(f"statecrawl_{kind}_per_second", rate, window)
    minute = snap["last_minute"]
    add("statecrawl_fetches_last_minute", minute["fetches"])
    status = minute["status"]
    for status_class in sorted({*STATUS_CLASSES, *status}):  # every class, 0s too: a steady series
        add("statecrawl_responses_last_minute", status.get(status_class, 0), status_class)
    for stage, field in (("download", "errors"), ("callback", "callback_errors")):
        for kind, count in _capped(minute[field]).items():
            add("statecrawl_errors_last_minute", count, stage, kind)
    add("statecrawl_response_bytes_last_minute", minute["bytes"])
    add("statecrawl_ignored_requests_last_minute", minute["ignored"])
    for le, count in _latency(minute["latency"]):
        add("statecrawl_fetch_latency_seconds_last_minute_bucket", count, le)
    polite = snap["politeness"]
    if polite["polite"]:
        add("statecrawl_hosts", polite["hosts"])
    for host in snap["hosts"]:
        name = host["host"]
        if "queued" in host:  # a polite crawl's budget row
            add("statecrawl_host_queued_requests", host["queued"], name)
            add("statecrawl_host_in_flight_requests", host["in_flight"], name)
            for source, delay in host["delay"].items():
                add("statecrawl_host_delay_seconds", delay, name, source)
            add("statecrawl_host_concurrency_limit", host["concurrency"], name)
            add("statecrawl_host_next_slot_seconds", host["next_in"], name)
            add("statecrawl_host_backoff_level", host["backoff"], name)
        add("statecrawl_host_fetches_last_minute", host["fetches_1m"], name)
        add("statecrawl_host_errors_last_minute", host["errors_1m"], name)
    for worker in snap["workers"]:
        wid = worker["id"]
        add("statecrawl_worker_info", 1, wid, worker.get("host", ""), worker.get("pid", ""))
        add("statecrawl_worker_heartbeat_age_seconds", worker["heartbeat_age"], wid)
        add("statecrawl_worker_leases", worker["leases"], wid)
        add("statecrawl_worker_oldest_lease_age_seconds", worker.get("oldest_lease_s"), wid)
    return rows


def crawls_rows(states: Counter[str]) -> list[Row]:
    return [("statecrawl_crawls", (state,), count) for state, count in sorted(states.items())]
