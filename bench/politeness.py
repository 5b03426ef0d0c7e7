"""The rate each site sees from 4 workers sharing one politeness budget, measured at the servers.

    .venv/bin/python bench/politeness.py [--pages 60] [--hosts 20] [--workers 4]

Each site is served by nginx on its own 127.0.0.x address (one server block
per host: a home page linking to ``--pages`` static pages), which logs when
each request was served (``$msec``, 1 ms resolution); the 429 site is a small
Python server (``tests/_servers.py``) that answers its 10th request with 429
once. Figures:

1. one host, ``DOWNLOAD_DELAY=0.25``: requests/s the server saw and the
   shortest gap between two requests, for 4 statecrawl workers sharing one
   crawl, for plain Scrapy with the same settings in 4 processes, and for one
   plain Scrapy process without jitter (what one well-behaved process gets:
   the measurement's own noise floor on this machine);
2. ``--hosts`` hosts, delay 0.25 s: the aggregate rate (the budget allows
   hosts x 4/s) and the worst host's shortest gap and rate;
3. one host answering its 10th request with 429 ``Retry-After: 2``: how long
   until the next request reached it (no worker may send one sooner).

Rates are requests over the span from a server's first to its last request.
nginx logs a request when its worker process gets to it, which on a loaded
machine can be later than it arrived; as root, the script also captures the
request packets on the loopback device (``tcpdump``) and gives the shortest
gap on the wire, which nginx's scheduling cannot blur.
Each statecrawl worker's ``statecrawl/polite/*`` stats are summed and printed
(slots waited for, missed and taken again), with the Redis round trips per
page (commits, lease calls, new slots). ``bench/throughput.py`` gives the
cost with no delay set. Needs nginx (``apt-get install nginx-light``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import free_port, start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests._servers import Reply, ScriptedServer, gaps, links_page  # noqa: E402

SPIDER = Path(__file__).resolve().parent / "polite_spider.py"
STATECRAWL = ['ADDONS={"statecrawl.Addon": 0}']


def crawl(urls: list[str], workers: int, redis_url: str, *settings: str) -> dict[str, int]:
    """Run *workers* processes of the bench spider on *urls*; returns their summed
    ``statecrawl/polite/*`` stats."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(urls))
    env = {**os.environ, "REDIS_URL": redis_url, "BENCH_URLS": f.name,
           "BENCH_CRAWL_ID": f"polite-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(ROOT)}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(SPIDER), "-s", "LOG_LEVEL=INFO"]
    for s in settings:
        cmd += ["-s", s]
    procs = [subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    errors = [p.communicate(timeout=600)[1] for p in procs]

    os.unlink(f.name)
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed:\n" + "\n".join(e[-2000:] for e in errors))
    stats: dict[str, int] = {}
    for log in errors:
        for m in re.finditer(r"'statecrawl/(polite/\w+|commits|lease_calls|leased)': (\d+)", log):
            name = m[1].removeprefix("polite/")
            stats[name] = stats.get(name, 0) + int(m[2])
    if stats.get("leased"):  # Redis round trips per page: commits, leases, new slots
        trips = sum(stats.get(k, 0) for k in ("commits", "lease_calls", "late", "backed_off",
                                               "delay_changed"))
        stats["trips_per_page"] = round(trips / stats["leased"], 2)  # type: ignore[assignment]
    return stats


class Capture:
    """Request packets to *port* on the loopback device, with the kernel's timestamps
    (``tcpdump``; needs root): when each request reached the wire, free of the
    server's own scheduling. ``times()`` is empty where tcpdump cannot run."""

    GET = "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420"  # payload starts with "GET "

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Capture:
        tcpdump = shutil.which("tcpdump")
        if tcpdump and os.geteuid() == 0:
            self.proc = subprocess.Popen(
                [tcpdump, "-i", "lo", "-n", "-tt", "-l", "-Q", "in",
                 f"tcp dst port {self.port} and {self.GET}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(1.0)  # until it listens
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            time.sleep(0.5)
            self.proc.send_signal(signal.SIGINT)

    def times(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        if self.proc is None:
            return out
        text = self.proc.communicate(timeout=30)[0]
        for line in text.splitlines():
            parts = line.split()
            if len(parts) > 4 and parts[1] == "IP":
                out.setdefault(parts[4].rsplit(".", 1)[0], []).append(float(parts[0]))
        return out


def wire_gap(capture: Capture) -> str:
    times = capture.times()
    if not times:
        return "n/a (tcpdump needs root)"
    return f"{min(min(gaps(t), default=9.9) for t in times.values()) * 1000:.1f} ms"


class Nginx:
    """nginx serving one small site per 127.0.0.x address, logging when it served each request."""

    def __init__(self, hosts: int, pages: int, tmp: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise SystemExit("nginx is not installed (apt-get install nginx-light)")
        self.port, self.tmp, self.hosts = free_port(), tmp, hosts
        root = tmp / "www"
        (root / "p").mkdir(parents=True)
        (root / "index.html").write_bytes(links_page(pages).body)
        for i in range(pages):
            (root / "p" / str(i)).write_bytes(Reply().body)
        tmp.chmod(0o755)  # nginx workers drop to an unprivileged user
        servers = "".join(f"  server {{ listen 127.0.0.{i + 1}:{self.port}; root {root}; }}\n"
                          for i in range(hosts))
        (tmp / "nginx.conf").write_text(
            f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;\n"
            "events { worker_connections 4096; }\n"
            "http { log_format t '$msec $server_addr $status $request_uri';\n"
            f"  access_log {tmp}/access.log t; default_type text/html;\n{servers}}}\n")
        self.proc = subprocess.Popen([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def urls(self, n: int) -> list[str]:
        return [f"http://127.0.0.{i + 1}:{self.port}/" for i in range(n)]

    def times(self) -> dict[str, list[float]]:
        """Served times per host address, and the log emptied for the next run."""
        log = self.tmp / "access.log"
        out: dict[str, list[float]] = {}
        for line in log.read_text().splitlines():
            when, addr, status, path = line.split(" ", 3)
            if status != "200":
                raise RuntimeError(f"nginx answered {status} to {path}: see {self.tmp}/nginx.err")
            out.setdefault(addr, []).append(float(when))
        log.write_text("")
        self.proc.send_signal(signal.SIGUSR1)  # reopen the log
        time.sleep(0.2)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def seen(times: list[float]) -> tuple[int, float, float]:
    """(requests, requests/s over the first-to-last span, shortest gap s) a server saw."""
    times = sorted(times)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return len(times), (len(times) - 1) / span if span else 0.0, min(gaps(times), default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=60, help="pages per host (default: 60)")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.25)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-polite-"))
    redis, port = start_redis(tmp)
    redis_url = f"redis://127.0.0.1:{port}/0"
    out: dict[str, object] = {"workers": args.workers, "delay": args.delay, "pages": args.pages,
                              "load_before": os.getloadavg()[0]}
    delay = f"DOWNLOAD_DELAY={args.delay}"
    tmp.chmod(0o755)  # nginx workers drop to an unprivileged user
    nginx = Nginx(args.hosts, args.pages, tmp / "nginx")
    try:
        print(f"{args.workers} workers, delay {args.delay}s (budget {1 / args.delay:g} req/s "
              "per host), measured at the servers", flush=True)
        for name, extra, workers in (("statecrawl", STATECRAWL, args.workers),
                                     ("scrapy", [], args.workers),
                                     ("scrapy x1", ["DOWNLOAD_DELAY_JITTER=0"], 1)):
            with Capture(nginx.port) as capture:
                stats = crawl(nginx.urls(1), workers, redis_url, delay, *extra)
            n, rate, gap = seen(nginx.times()["127.0.0.1"])
            wire = wire_gap(capture)
            out[f"one_host_{name}"] = {"requests": n, "rate": rate, "min_gap": gap,
                                       "min_gap_wire": wire, "stats": stats}
            print(f"  one host, {name + f' ({workers} proc)':<19}: {n:4d} requests, "
                  f"{rate:5.2f} req/s, shortest gap {gap * 1000:6.1f} ms (wire: {wire}) "
                  f"{stats or ''}", flush=True)

        with Capture(nginx.port) as capture:
            stats = crawl(nginx.urls(args.hosts), args.workers, redis_url, delay, *STATECRAWL)
        times = nginx.times()
        wire = wire_gap(capture)
        per = [seen(t) for t in times.values()]
        total = sum(n for n, _, _ in per)
        every = [t for ts in times.values() for t in ts]
        short = sum(g < args.delay - 0.005 for ts in times.values() for g in gaps(ts))
        agg = (total - 1) / (max(every) - min(every))
        budget = args.hosts / args.delay
        out["hosts"] = {"hosts": len(times), "requests": total, "rate": agg, "budget": budget,
                        "max_host_rate": max(r for _, r, _ in per),
                        "median_host_rate": statistics.median(r for _, r, _ in per),
                        "min_gap": min(g for _, _, g in per), "min_gap_wire": wire,
                        "gaps_short": short,
                        "stats": stats}
        print(f"  {len(times)} hosts, statecrawl: {total} requests, {agg:5.1f} req/s of "
              f"{budget:g} allowed ({agg / budget:.2f}x); per host: median "
              f"{statistics.median(r for _, r, _ in per):.2f}, busiest "
              f"{max(r for _, r, _ in per):.2f} req/s, shortest gap "
              f"{min(g for _, _, g in per) * 1000:.1f} ms (wire: {wire}), {short} of "
              f"{total - len(times)} gaps under {(args.delay - 0.005) * 1000:g} ms {stats}",
              flush=True)

        script = {"/": [links_page(args.pages)],
                  "/p/9": [Reply(429, b"slow down", {"Retry-After": "2"}), Reply()]}
        with ScriptedServer(script) as site:  # type: ignore[arg-type]
            stats = crawl([site.url + "/"], args.workers, redis_url, "DOWNLOAD_DELAY=0.05",
                          *STATECRAWL)
            refused = next(t for t, path in site.times if path == "/p/9")
            after = min(t for t, _ in site.times if t > refused) - refused
        out["retry_after"] = {"retry_after": 2.0, "next_request_after": after, "stats": stats}
        print(f"  429 with Retry-After: 2 -> next request {after:.3f} s later {stats}", flush=True)
    finally:
        nginx.stop()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"load average {out['load_before']:.2f} before, {out['load_after']:.2f} after")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
