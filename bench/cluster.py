"""statecrawl on a local Redis Cluster: what waiting for replicas costs.

    .venv/bin/python bench/cluster.py [--commits 2000] [--rounds 3] [--pages 1500] [--workers 2]

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

One crawl lives in one slot (one master) until issue 17's sharding lands: the
figures of one crawl spread over the masters (pages/s and Redis CPU per master,
key and memory balance) are not measured here yet. Runs need ``redis-server``
and ``redis-cli`` (``make install``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from _common import free_port  # noqa: E402  (bench/ is on sys.path when run as a script)
from _procs import ROOT, base_env, percentile

sys.path.insert(0, str(ROOT))
from statecrawl.demo.site import DemoSite  # noqa: E402
from statecrawl.frontier.connection import redis_from_url  # noqa: E402
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


async def commit_latencies(url: str, wait: bool, n: int) -> list[float]:
    """*n* page-sized commits, one at a time, on a fresh crawl; seconds each."""
    client = redis_from_url(url)
    try:
        store = CrawlStore(client, "bench-" + uuid.uuid4().hex[:8])
        store.replica_wait = ReplicaWait(1, 1.0) if wait else None
        await store.open_crawl(spider="bench")
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
    return PendingRequest(uuid.uuid5(uuid.NAMESPACE_URL, url).bytes + b"0000", True, 0,
                          ('{"url": "%s"}' % url).encode())


# -- 2: a crawl ---------------------------------------------------------------------------


def crawl_rate(url: str, wait: bool, pages: int, workers: int, tmp: Path) -> float:
    """Pages/s of *workers* workers crawling a demo site, first page stored to last."""
    crawl_id = "bench-" + uuid.uuid4().hex[:8]
    items = f"sc:{{{crawl_id}}}:items"
    client = redis_from_url(url, sync=True)
    with DemoSite(pages=pages) as site:
        args = [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={site.url}/", "-a",
                f"crawl_id={crawl_id}", "-s", "LOG_LEVEL=WARNING",
                "-s", f"STATECRAWL_REDIS_WAIT_REPLICAS={1 if wait else 0}"]
        env = base_env(STATECRAWL_REDIS_URL=url)
        procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / f"{crawl_id}-{i}.log", "w"))
                 for i in range(workers)]
        first = last = None
        seen = 0
        while any(p.poll() is None for p in procs):
            n = client.hlen(items)
            now = time.monotonic()
            if n and first is None:
                first, base = now, n
            if n > seen:
                seen, last = n, now
            time.sleep(0.02)
        n = client.hlen(items)
        if n > seen:
            seen, last = n, time.monotonic()
    codes = [p.returncode for p in procs]
    if codes != [0] * workers or first is None or last is None or last <= first:
        raise RuntimeError(f"crawl {crawl_id} failed: exit codes {codes} (logs in {tmp})")
    return (seen - base) / (last - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    procs, url = start_cluster(tmp)
    try:
        lat: dict[bool, list[float]] = {False: [], True: []}
        rates: dict[bool, list[float]] = {False: [], True: []}
        for r in range(opts.rounds):
            for wait in ((False, True) if r % 2 == 0 else (True, False)):
                lat[wait] += asyncio.run(commit_latencies(url, wait, opts.commits))
            for wait in ((False, True) if r % 2 == 0 else (True, False)):
                rates[wait].append(crawl_rate(url, wait, opts.pages, opts.workers, tmp))
                print(f"round {r + 1}: {'WAIT 1' if wait else 'no WAIT'} crawl "
                      f"{rates[wait][-1]:.1f} pages/s", flush=True)
        print(f"\n1. commit latency, {opts.rounds} x {opts.commits} page-sized commits per mode (ms)")
        print(f"   {'mode':<10} {'median':>8} {'p90':>8} {'p99':>8}")
        for wait in (False, True):
            ms = [t * 1000 for t in lat[wait]]
            print(f"   {'WAIT 1' if wait else 'no WAIT':<10} {statistics.median(ms):8.3f} "
                  f"{percentile(ms, 90):8.3f} {percentile(ms, 99):8.3f}")
        ratio = statistics.median(lat[True]) / statistics.median(lat[False])
        print(f"   WAIT / no WAIT (medians): {ratio:.2f}x")
        print(f"\n2. a crawl of {opts.pages} pages, {opts.workers} workers, median of {opts.rounds}")
        for wait in (False, True):
            print(f"   {'WAIT 1' if wait else 'no WAIT':<10} {statistics.median(rates[wait]):8.1f} pages/s  "
                  f"({', '.join(f'{x:.1f}' for x in rates[wait])})")
        print(f"   WAIT / no WAIT: {statistics.median(rates[True]) / statistics.median(rates[False]):.2f}x")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
