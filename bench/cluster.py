"""statecrawl on a local Redis Cluster: one crawl over three masters, and what waiting
for replicas costs.

    .venv/bin/python bench/cluster.py [--commits 2000] [--rounds 3] [--pages 1500] [--workers 2]
                                      [--scale-pages 3000] [--scale-workers 6] [--shards 6]

Starts a cluster of 6 ``redis-server`` processes (3 masters + 3 replicas, no
persistence) on 127.0.0.1 in a temp dir, and measures, with and without
``STATECRAWL_REDIS_WAIT_REPLICAS=1`` (statecrawl/frontier/replication.py):

1. **commit latency**: one ``CrawlStore.commit`` at a time, each a page's worth
   (10 new links, one item, the ack of one lease, a lease of one more), the two
   modes alternating in ``--rounds`` rounds of ``--commits`` commits; median, p90
   and p99 per mode over all rounds;
2. **a crawl**: ``--workers`` ``scrapy crawl site`` workers over a demo site of
   ``--pages`` pages, one crawl per mode per round (alternating); pages/s from the
   first page stored to the last, median over the rounds.

3. **one crawl, one node or three masters**: ``--scale-workers`` workers crawl
   ``--scale-pages`` pages, on one ``redis-server`` (1 shard) and on the cluster
   (``--shards`` shards, statecrawl/frontier/shards.py), alternating; pages/s
   (median), each master's Redis CPU seconds over the crawl, and the crawl's keys
   and bytes (``MEMORY USAGE``) on each master once it is done, with max/mean.
   Items go to a directory sink, so Redis holds the frontier and dupefilter only.

4. **memory at scale**: ``--fill`` requests committed into a crawl of 1 shard and
   of ``--shards`` shards on the cluster (nothing leased): the crawl's keys and
   bytes per master, max/mean, and bytes per queued request.

5. **what a page limit costs a sharded commit** (statecrawl/frontier/_quota.py):
   figure 1's commits on a crawl of ``--shards`` shards, without a limit and with
   one never reached, alternating in ``--rounds`` rounds; median, p90, p99.

``--parts`` picks the figures (default ``1,2,3,4``; 5 runs when asked). The machine runs the workers,
the sites and every Redis: on few cores the workers, not Redis, set the pace.
Runs need ``redis-server`` and ``redis-cli`` (``make install``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from _common import free_port, start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)
from _procs import ROOT, base_env, percentile

sys.path.insert(0, str(ROOT))
from statecrawl.demo.site import DemoSite  # noqa: E402
from statecrawl.frontier.connection import redis_from_url  # noqa: E402
from statecrawl.frontier.lifecycle import crawl_pattern  # noqa: E402
from statecrawl.frontier.replication import ReplicaWait  # noqa: E402
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest  # noqa: E402

NODES = 6


def start_cluster(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """6 nodes joined as 3 masters + 3 replicas; returns the processes and the cluster URL."""
    procs, ports = [], []
    while len(ports) < NODES:
        port = free_port()
        if port + 10000 < 65536 and port not in ports and port + 10000 not in ports:
            ports.append(port)
    for port in ports:
        home = tmp / str(port)
        home.mkdir()
        procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
             "127.0.0.1", "--dir", str(home), "--cluster-enabled", "yes", "--cluster-config-file",
             str(home / "nodes.conf"), "--cluster-node-timeout", "3000", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port in ports:
        _wait(lambda p=port: _pings(p), 10, f"node {port}")
    subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "1", "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    for port in ports:
        _wait(lambda p=port: _cluster_ok(p), 30, f"node {port} to agree on the slots")
    for port in ports:  # and every replica has its master's data (else WAITs start short)
        _wait(lambda p=port: _synced(p), 30, f"node {port}'s replication link")
    return procs, "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports[:3]) + "/"


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.ConnectionError:
        return False


def _cluster_ok(port: int) -> bool:
    raw = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER INFO")
    return raw.get("cluster_state") == "ok" and int(raw.get("cluster_known_nodes", 0)) == NODES


def _synced(port: int) -> bool:
    info = redis.Redis(port=port, decode_responses=True).info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- 1: commit latency ----------------------------------------------------------------


async def commit_latencies(url: str, wait: bool, n: int, shards: int = 1,
                           limit: int | None = None) -> list[float]:
    """*n* page-sized commits, one at a time, on a fresh crawl (of *shards* shards, with
    page limit *limit*); seconds each."""
    client = redis_from_url(url)
    try:
        store = CrawlStore(client, "bench-" + uuid.uuid4().hex[:8])
        store.replica_wait = ReplicaWait(1, 1.0) if wait else None
        await store.open_crawl(spider="bench", shards=shards, limit=limit)
        await store.commit("w", dedupe="exact", requests=[_req(f"seed{i}") for i in range(4)])
        _, pairs = await store.lease("w", 1, check_finished=False)
        lease = [pairs[0][0]] if pairs else []
        took = []
        for i in range(n):
            started = time.perf_counter()
            result = await store.commit(
                "w", dedupe="exact", requests=[_req(f"p{i}-{j}") for j in range(10)],
                items=[PendingItem(f"http://bench/{i}", False, b'{"url": "http://bench/%d"}' % i)],
                acks=lease, want=1)
            took.append(time.perf_counter() - started)
            lease = [result.leased[0][0]] if result.leased else []
        if store.replica_wait is not None and store.replica_wait.short:
            print(f"  ({store.replica_wait.short} WAITs short of a replica)")
        await store.delete()
        return took
    finally:
        await client.aclose()


def _req(key: str) -> PendingRequest:
    url = f"http://bench.invalid/{key}"
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0,  # as Scrapy's: SHA-1
                          ('{"url": "%s"}' % url).encode())


# -- 2: a crawl ---------------------------------------------------------------------------


def crawl(url: str, extra: list[str], pages: int, workers: int, tmp: Path) -> tuple[float, str]:
    """(pages/s, crawl id) of *workers* workers crawling a demo site with the settings
    *extra*, items to a directory sink; the rate from the first page stored to the last."""
    crawl_id = "bench-" + uuid.uuid4().hex[:8]
    stats = f"sc:{{{crawl_id}}}:stats"
    client = redis_from_url(url, sync=True)
    with DemoSite(pages=pages) as site:
        args = [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={site.url}/", "-a",
                f"crawl_id={crawl_id}", "-s", "LOG_LEVEL=WARNING", *extra]
        env = base_env(STATECRAWL_REDIS_URL=url, STATECRAWL_SINK=str(tmp / crawl_id))
        procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / f"{crawl_id}-{i}.log", "w"))
                 for i in range(workers)]
        first = last = None
        seen = base = 0
        while True:
            running = any(p.poll() is None for p in procs)
            n = int(client.hget(stats, "items") or 0)
            now = time.monotonic()
            if n and first is None:
                first, base = now, n
            if n > seen:
                seen, last = n, now
            if not running:
                break
            time.sleep(0.02)
    client.close()
    codes = [p.returncode for p in procs]
    if codes != [0] * workers or first is None or last is None or last <= first:
        raise RuntimeError(f"crawl {crawl_id} failed: exit codes {codes} (logs in {tmp})")
    return (seen - base) / (last - first), crawl_id


# -- 3: one crawl on one node, or spread over three masters -------------------------------


def masters(url: str) -> list[int]:
    """The ports of a cluster's masters, or of the one server of a redis:// URL."""
    if not url.startswith("redis+cluster://"):
        return [int(url.rsplit(":", 1)[1].split("/")[0])]
    client = redis_from_url(url, sync=True)
    try:
        return sorted(int(node.port) for node in client.get_primaries())
    finally:
        client.close()


def cpu_of(ports: list[int]) -> list[float]:
    """Each server's CPU seconds so far (INFO cpu: user + sys)."""
    out = []
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


def spread_of(ports: list[int], crawl_id: str) -> tuple[list[int], list[int]]:
    """(keys, bytes) of the crawl on each server (SCAN of its pattern, MEMORY USAGE)."""
    keys, size = [], []
    for port in ports:
        client = redis.Redis(port=port)
        found = list(client.scan_iter(match=crawl_pattern(crawl_id), count=1000))
        keys.append(len(found))
        size.append(sum(int(client.memory_usage(k, samples=5) or 0) for k in found))
    return keys, size


def scale(url: str, shards: int, pages: int, workers: int, tmp: Path) -> dict[str, object]:
    ports = masters(url)
    before = cpu_of(ports)
    rate, crawl_id = crawl(url, ["-s", f"STATECRAWL_SHARDS={shards}"], pages, workers, tmp)
    cpu = [after - b for after, b in zip(cpu_of(ports), before)]
    keys, size = spread_of(ports, crawl_id)
    return {"rate": rate, "cpu": cpu, "keys": keys, "bytes": size}


# -- 4: memory at scale ------------------------------------------------------------------


async def fill(url: str, shards: int, n: int) -> str:
    """Commit *n* new requests (batches of 1,000) into a fresh crawl of *shards* shards;
    its id. The frontier and dupefilter then hold them all (nothing leased)."""
    client = redis_from_url(url)
    try:
        store = CrawlStore(client, "fill-" + uuid.uuid4().hex[:8])
        await store.open_crawl(spider="bench", shards=shards)
        for start in range(0, n, 1000):
            await store.commit("w", dedupe="exact",
                               requests=[_req(f"m{i}") for i in range(start, min(n, start + 1000))])
        return store.crawl_id
    finally:
        await client.aclose()


def print_latencies(base: str, base_s: list[float], other: str, other_s: list[float]) -> None:
    """Median, p90 and p99 (ms) of two modes' latencies (s), and the ratio of the medians."""
    print(f"   {'mode':<10} {'median':>8} {'p90':>8} {'p99':>8}")
    for name, took in ((base, base_s), (other, other_s)):
        ms = [t * 1000 for t in took]
        print(f"   {name:<10} {statistics.median(ms):8.3f} {percentile(ms, 90):8.3f} "
              f"{percentile(ms, 99):8.3f}")
    print(f"   {other} / {base} (medians): "
          f"{statistics.median(other_s) / statistics.median(base_s):.2f}x")


def _ratio(values: list[int] | list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{max(values) / mean:.2f}" if mean else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale-pages", type=int, default=3000)
    ap.add_argument("--scale-workers", type=int, default=6)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--fill", type=int, default=200_000, help="requests queued for figure 4")
    ap.add_argument("--parts", default="1,2,3,4", help="which figures: 1,2,3,4,5")
    opts = ap.parse_args()
    parts = {int(p) for p in opts.parts.split(",")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs, url = start_cluster(tmp)
    single, port = start_redis(tmp)
    single_url = f"redis://127.0.0.1:{port}/0"
    try:
        lat: dict[bool, list[float]] = {False: [], True: []}
        rates: dict[bool, list[float]] = {False: [], True: []}
        runs: dict[str, list[dict[str, object]]] = {"one node": [], "3 masters": []}
        limited: dict[bool, list[float]] = {False: [], True: []}
        for r in range(opts.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            if 5 in parts:
                for with_limit in order:
                    limited[with_limit] += asyncio.run(commit_latencies(
                        url, False, opts.commits, opts.shards, 10**9 if with_limit else None))
            if 1 in parts:
                for wait in order:
                    lat[wait] += asyncio.run(commit_latencies(url, wait, opts.commits))
            if 2 in parts:
                for wait in order:
                    extra = ["-s", f"STATECRAWL_REDIS_WAIT_REPLICAS={1 if wait else 0}"]
                    rates[wait].append(crawl(url, extra, opts.pages, opts.workers, tmp)[0])
                    print(f"round {r + 1}: {'WAIT 1' if wait else 'no WAIT'} crawl "
                          f"{rates[wait][-1]:.1f} pages/s", flush=True)
            if 3 in parts:
                setups = [("one node", single_url, 1), ("3 masters", url, opts.shards)]
                for name, where, shards in (setups if r % 2 == 0 else setups[::-1]):
                    runs[name].append(scale(where, shards, opts.scale_pages, opts.scale_workers, tmp))
                    print(f"round {r + 1}: {name} {runs[name][-1]['rate']:.1f} pages/s", flush=True)
        if 1 in parts:
            print(f"\n1. commit latency, {opts.rounds} x {opts.commits} page-sized commits per mode (ms)")
            print_latencies("no WAIT", lat[False], "WAIT 1", lat[True])
        if 2 in parts:
            print(f"\n2. a crawl of {opts.pages} pages, {opts.workers} workers, median of {opts.rounds}")
            for wait in (False, True):
                print(f"   {'WAIT 1' if wait else 'no WAIT':<10} {statistics.median(rates[wait]):8.1f} "
                      f"pages/s  ({', '.join(f'{x:.1f}' for x in rates[wait])})")
            print(f"   WAIT / no WAIT: {statistics.median(rates[True]) / statistics.median(rates[False]):.2f}x")
        if 3 in parts:
            print(f"\n3. one crawl of {opts.scale_pages} pages, {opts.scale_workers} workers: one "
                  f"redis-server (1 shard) vs 3 masters ({opts.shards} shards); items in a "
                  f"directory sink, so Redis holds the frontier and dupefilter")
            for name, found in runs.items():
                each = [float(x["rate"]) for x in found]  # type: ignore[arg-type]
                last = found[-1]
                cpu = last["cpu"]
                print(f"   {name:<10} {statistics.median(each):8.1f} pages/s (median of "
                      f"{len(each)}: {', '.join(f'{x:.1f}' for x in each)})")
                print(f"              Redis CPU s per master (last run): "
                      f"{', '.join(f'{c:.2f}' for c in cpu)} (sum {sum(cpu):.2f}, max/mean {_ratio(cpu)})")
                print(f"              keys per master {last['keys']} (max/mean {_ratio(last['keys'])}), "
                      f"bytes per master {last['bytes']} (max/mean {_ratio(last['bytes'])})")
        if 4 in parts:
            print(f"\n4. {opts.fill:,} requests queued (frontier + dupefilter), on the cluster: "
                  f"bytes of the crawl's keys per master")
            ports = masters(url)
            for shards in (1, opts.shards):
                crawl_id = asyncio.run(fill(url, shards, opts.fill))
                keys, size = spread_of(ports, crawl_id)
                print(f"   {shards:>3} shard(s): keys {keys} (max/mean {_ratio(keys)}), bytes "
                      f"{size} (max/mean {_ratio(size)}), {sum(size) / opts.fill:.1f} B/request")
        if 5 in parts:
            print(f"\n5. commit latency on {opts.shards} shards, {opts.rounds} x {opts.commits} "
                  f"page-sized commits, without and with a page limit (ms)")
            print_latencies("no limit", limited[False], "limit", limited[True])
    finally:
        for p in [*procs, single]:
            p.terminate()
        for p in [*procs, single]:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
