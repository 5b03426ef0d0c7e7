"""One crawl seen as one thing: the facts ``statecrawl status``, ``/metrics`` and the live
page all show, read from Redis in a few pipelined round trips.

:func:`crawl_snapshot` returns a JSON-ready dict:

* the counters of :meth:`CrawlStore.status` (``queued``, ``in_flight``, ``done``,
  ``failed``, ``seen``, ``stats`` ...) and ``progress``: for a crawl with a ``limit``
  (requests admitted), the share of it admitted and ended (1.0 once finished), else None;
* ``rates``: pages and items per second over the last 1, 5 and 15 minutes, and
  ``last_minute``: the rolling counters (:mod:`statecrawl.frontier.rolling`)
  summed over 60 s: ``status`` (``2xx`` ... ``other``), ``errors`` (download
  exception class -> count), ``callback_errors``, ``latency`` (``le`` ->
  count, not cumulative), ``bytes``, ``fetches``, ``ignored``;
* ``series``: per 10-second bucket of the last 15 minutes, oldest first,
  ``{"t": start (unix s), "pages", "items", "fetches", "errors"}`` (the chart);
* ``hosts``: the top hosts: by backlog in a polite crawl (queued, in flight,
  delay and concurrency budget, next slot, backoff level), else by fetches in the
  last minute; every row has ``fetches_1m``, ``errors_1m`` and ``rate`` (fetches/s);
* ``workers``: each live worker's ``id``, ``heartbeat_age`` (s), ``leases`` it
  holds (Redis' count), and what its heartbeats tell (``host``, ``pid``,
  ``oldest_lease_s``); ``leases``: in flight, the oldest age, reclaimed so far;
* ``dupefilter``: mode, entries, and for ``bloom`` its estimated fill;
* ``redis``: used memory, the mean time of the scripts the workers run (µs,
  ``INFO commandstats``) and this reader's round trip (ms);
* ``dead_letters``: the newest few (recent errors).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

from statecrawl.frontier.cluster import is_cluster, node_of
from statecrawl.frontier.deadletter import read_dead_letters
from statecrawl.frontier.hosts import budget_store
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.rolling import BUCKET_SECONDS, rates_of, read_buckets
from statecrawl.frontier.store import LIVE_WORKER_WINDOW, CrawlStore

__all__ = ["SERIES_SECONDS", "crawl_snapshot", "host_rows", "redis_facts"]

#: The span of ``series`` (s); also the longest rate window (15 min), read from the same buckets.
SERIES_SECONDS = 900


async def host_rows(store: CrawlStore, top: int) -> dict[str, Any]:
    """The crawl's politeness budget and its *top* hosts by queued requests (then in flight)."""
    k = store.keys
    budget = await budget_store(store)  # a crawl sharded by host: each host in its shard
    fields: dict[str, str] = {}
    for shard in budget.shards:
        raw = await store.client.hgetall(shard.hosts)
        fields.update({a.decode(errors="replace"): b.decode(errors="replace")
                       for a, b in raw.items()})
    now_s, now_us = await store.client.time()
    now = now_s * 1000 + now_us // 1000
    hosts = sorted({name.split("|", 1)[0] for name in fields} - {"*"})
    async with store.client.pipeline(transaction=False) as pipe:  # a round trip (per node)
        for host in hosts:
            pipe.zlexcount(budget.of(host).hostq, f"[{host} ", f"({host}!")
        counts = await pipe.execute() if hosts else []
    rows = []
    for host, queued in zip(hosts, counts):
        due = int(fields.get(host, 0) or 0)
        rows.append({
            "host": host, "queued": queued, "in_flight": int(fields.get(f"{host}|n", 0) or 0),
            "delay": {src: int(fields[f"{host}|{key}"]) / 1000
                      for key, src in (("d", "override"), ("r", "robots"), ("a", "autothrottle"))
                      if f"{host}|{key}" in fields},
            "concurrency": int(fields[f"{host}|c"]) if f"{host}|c" in fields else None,
            "next_in": max(0, due - now) / 1000, "backoff": int(fields.get(f"{host}|b", 0) or 0),
        })
    rows.sort(key=lambda r: (-r["queued"], -r["in_flight"], r["host"]))
    polite = await store.client.hget(k.meta, "polite")
    return {
        "crawl_id": store.crawl_id, "polite": polite in (b"1", "1"),
        "delay": int(fields.get("*|d", 0) or 0) / 1000,
        "concurrency": int(fields.get("*|c", 0) or 0),
        "autothrottle": float(fields.get("*|at", 0) or 0),
        "hosts": len(rows), "top": rows[:top],
    }


async def _info(client: Any, section: str, key: str | None) -> list[dict[str, Any]]:
    """``INFO section`` of Redis; on a cluster, of *key*'s master, or of every master."""
    if not is_cluster(client):
        return [await client.info(section)]
    nodes = [node_of(client, key)] if key is not None else client.get_primaries()
    return [await client.info(section, target_nodes=node) for node in nodes]


async def redis_facts(client: Any, key: str | None = None) -> dict[str, Any]:
    """Redis' used memory, its scripts' mean run time (µs) and one PING's round trip (ms).

    On a Redis Cluster, of the master holding *key* (a crawl's key: its node), or, with no
    *key*, summed over every master (memory, script calls and time)."""
    started = time.perf_counter()
    await client.ping()
    ping_ms = (time.perf_counter() - started) * 1000
    used = calls = usec = 0
    for memory in await _info(client, "memory", key):
        used += int(memory.get("used_memory", 0))
    for stats in await _info(client, "commandstats", key):
        for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"):
            entry = stats.get(name) or {}
            calls += int(entry.get("calls", 0))
            usec += int(entry.get("usec", 0))
    return {"used_memory": used, "ping_ms": round(ping_ms, 3),
            "script_calls": calls, "script_usec_per_call": round(usec / calls, 2) if calls else None}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _errors(fields: dict[str, int]) -> int:
    return sum(v for k, v in fields.items() if k.startswith("err:")) + fields.get("s:5xx", 0)


def _last_minute(buckets: list[dict[str, int]]) -> dict[str, Any]:
    total: Counter[str] = Counter()
    for fields in buckets[:60 // BUCKET_SECONDS]:
        total.update(fields)
    def group(prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in sorted(total.items()) if k.startswith(prefix)}
    status = group("s:")
    return {"status": status, "errors": group("err:"), "callback_errors": group("cb:"),
            "latency": group("lat:"), "bytes": total.get("bytes", 0),
            "fetches": sum(status.values()) + sum(group("err:").values()),
            "ignored": total.get("ignored", 0), "pages": total.get("pages", 0),
            "items": total.get("items", 0), "hosts": _per_host(total)}


def _per_host(total: Counter[str]) -> dict[str, dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    for name, value in total.items():
        if name.startswith("h:") and name[-2:] in (":f", ":e"):
            host = name[2:-2]
            row = hosts.setdefault(host, {"fetches": 0, "errors": 0})
            row["fetches" if name.endswith(":f") else "errors"] += value
    return hosts


async def _workers(store: CrawlStore, now_ms: int) -> list[dict[str, Any]]:
    k = store.keys
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(k.workers, now_ms - int(LIVE_WORKER_WINDOW * 1000), "+inf",
                           withscores=True)
        pipe.hvals(k.leases)
        live, leases = await pipe.execute()
    held = Counter(_text(v).split(" ", 1)[0] for v in leases)
    names = [_text(w) for w, _ in live]
    infos = await store.client.hmget(k.tokens, [f"{w}|info" for w in names]) if names else []
    rows = []
    for (worker, beat), name, info in zip(live, names, infos):
        row: dict[str, Any] = {"id": name, "heartbeat_age": round(max(0, now_ms - beat) / 1000, 3),
                               "leases": held.get(name, 0)}
        try:
            told = json.loads(info) if info else {}
        except ValueError:
            told = {}
        if isinstance(told, dict):  # plain values only: nothing read here is acted on
            row.update({key: told[key] for key in ("host", "pid", "oldest_lease_s")
                        if isinstance(told.get(key), (str, int, float))})
        rows.append(row)
    return rows


def _bloom(meta: dict[str, str], entries: int) -> float | None:
    try:  # a sharded crawl: a filter of m bits in each shard
        m, k = int(meta["bloom_m"]) * int(meta.get("shards") or 1), int(meta["bloom_k"])
    except (KeyError, ValueError):
        return None
    return round(1 - math.exp(-k * entries / m), 6) if m > 0 else None


async def crawl_snapshot(store: CrawlStore, *, top: int = 10, dead: int = 5,
                         redis: bool = True) -> dict[str, Any]:
    """Everything shown about crawl *store* (module docstring). *redis* False leaves out the
    server's facts (``redis`` is None): ``/metrics`` reads them once for all its crawls."""
    snap = await store.status()
    now_s, now_us = await store.client.time()
    now_ms = now_s * 1000 + now_us // 1000
    meta = {_text(a): _text(b) for a, b in (await store.client.hgetall(store.keys.meta)).items()}
    limit, admitted = snap["limit"], snap["stats"].get("admitted", 0)
    handled = max(0, admitted - snap["queued"] - snap["in_flight"])  # counted requests ended
    snap["progress"] = None if not limit else 1.0 if snap["state"] == "finished" else min(
        1.0, handled / limit)
    # read once, at the snapshot's time: the rates, the last minute, the chart
    last, into, buckets = await read_buckets(store.client, store.keys,
                                             SERIES_SECONDS // BUCKET_SECONDS, now_s,
                                             shards=snap["shards"])
    pages, items = rates_of(buckets, into), rates_of(buckets, into, field="items")
    snap["rates"] = {"pages_per_s": {f"{s // 60}m": round(v, 3) for s, v in pages.items()},
                     "items_per_s": {f"{s // 60}m": round(v, 3) for s, v in items.items()}}
    minute = _last_minute(buckets)
    per_host = minute.pop("hosts")
    snap["last_minute"] = minute
    snap["series"] = [{"t": (last - i) * BUCKET_SECONDS, "pages": b.get("pages", 0),
                       "items": b.get("items", 0), "errors": _errors(b),
                       "fetches": sum(v for k, v in b.items() if k.startswith(("s:", "err:")))}
                      for i, b in reversed(list(enumerate(buckets)))]
    budget = await host_rows(store, top)
    rows = budget.pop("top")
    if not rows:  # not polite: no backlog per host; the busiest hosts of the last minute
        rows = [{"host": h} for h, _ in sorted(per_host.items(),
                                                key=lambda kv: (-kv[1]["fetches"], kv[0]))[:top]]
    for row in rows:
        seen = per_host.get(row["host"], {"fetches": 0, "errors": 0})
        row.update({"fetches_1m": seen["fetches"], "errors_1m": seen["errors"],
                    "rate": round(seen["fetches"] / 60, 3)})
    snap["politeness"] = budget
    snap["hosts"] = rows
    snap["workers"] = await _workers(store, now_ms)
    ages = [w["oldest_lease_s"] for w in snap["workers"]
            if isinstance(w.get("oldest_lease_s"), (int, float))]
    snap["leases"] = {"in_flight": snap["in_flight"], "oldest_age": max(ages) if ages else None,
                      "reclaimed": snap["stats"].get("reclaimed", 0)}
    mode = meta.get("dupefilter", "exact")
    snap["dupefilter"] = {"mode": mode, "entries": snap["seen"],
                          "bloom_fill": _bloom(meta, snap["seen"]) if mode == "bloom" else None}
    snap["redis"] = await redis_facts(store.client, store.keys.meta) if redis else None
    letters = []  # a sharded crawl's shards keep their own (newest last in each)
    for shard in range(snap["shards"]):
        keys = CrawlKeys(store.crawl_id, shard, snap["shards"])
        letters += await read_dead_letters(store.client, keys, dead)
    if snap["shards"] > 1:
        letters = sorted(letters, key=lambda d: -float(d.get("at") or 0))[:dead]
    snap["dead_letters"] = letters
    snap["at"] = now_s + now_us / 1e6
    return snap
