"""Pages/s of one trivial spider under three schedulers, measured in one run.

    .venv/bin/python bench/throughput.py [--pages 3000] [--rounds 3]

Setups, run in alternation (round-robin, ``--rounds`` times each) so that a
noisy neighbour hurts all of them alike:

* ``scrapy``      Scrapy's in-memory scheduler and RFPDupeFilter
* ``scrapy+freeze`` the same with ``gc.freeze()`` once the engine started, as statecrawl's
  workers do (``STATECRAWL_GC_FREEZE``): the comparison that leaves only statecrawl's own cost
* ``scrapy-redis`` scrapy_redis.scheduler.Scheduler + RFPDupeFilter (pickle, BRPOP-free default queue)
* ``statecrawl``  statecrawl.frontier.scheduler.Scheduler + RedisDupeFilter
* ``statecrawl+counters`` the same with the per-fetch rolling counters the add-on enables
  (``statecrawl.frontier.rolling.RollingCounters``; not in the default setups)
* ``statecrawl x2`` two statecrawl processes sharing one crawl (pages/s of the pair)

The site is the bundled demo site, written out as static files and served by
nginx when it is installed (``apt-get install nginx-light``), else served by
the demo site's own Python server (``--server python`` forces that); Redis is
a private ``redis-server`` (no persistence) on a free port. Two figures per run:
pages/s (wall clock, from the first response to close) and CPU ms per page
over the same span (the crawler processes, all threads, plus the Redis
server; process start-up excluded), which is steadier on a shared machine.
Each figure is the median over rounds; ratios are against plain Scrapy's
median. ``--setups`` picks a subset, e.g. ``--setups scrapy,statecrawl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
SPIDER = Path(__file__).resolve().parent / "trivial_spider.py"

SETUPS: dict[str, list[str]] = {
    "scrapy": [],
    # plain Scrapy with the garbage collector tuned as statecrawl's workers tune it
    # (STATECRAWL_GC_FREEZE): what is left is statecrawl's own cost
    "scrapy+freeze": ["-a", "gc_freeze=1"],
    "scrapy-redis": ["-s", "SCHEDULER=scrapy_redis.scheduler.Scheduler",
                     "-s", "DUPEFILTER_CLASS=scrapy_redis.dupefilter.RFPDupeFilter",
                     "-s", "SCHEDULER_FLUSH_ON_START=True"],
    "statecrawl": ["-s", "SCHEDULER=statecrawl.frontier.scheduler.Scheduler",
                   "-s", "DUPEFILTER_CLASS=statecrawl.frontier.dupefilter.RedisDupeFilter"],
}
#: statecrawl with every rolling counter (the add-on's RollingCounters middleware: status
#: class, bytes, latency, errors and host of each fetch, on top of the commits' own).
SETUPS["statecrawl+counters"] = [
    *SETUPS["statecrawl"],
    "-s", 'DOWNLOADER_MIDDLEWARES={"statecrawl.frontier.rolling.RollingCounters": 960}']


def start_site(pages: int, server: str, tmp: Path) -> tuple[subprocess.Popen[str], str]:
    """Serve the demo site; returns (process, base URL)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if server == "nginx" or (server == "auto" and nginx):
        if nginx is None:
            raise SystemExit("nginx is not installed (apt-get install nginx-light)")
        from statecrawl.demo.site import write_site

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        root = tmp / "site"
        write_site(root, pages, url)
        tmp.chmod(0o755)  # nginx workers drop to an unprivileged user
        conf = tmp / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; include /etc/nginx/mime.types; keepalive_requests 100000;\n"
            f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n")
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], text=True)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    print(f"site: nginx serving {pages} pages at {url}", flush=True)
                    return proc, url
            time.sleep(0.05)
        raise RuntimeError("nginx did not start")
    proc = subprocess.Popen([sys.executable, "-m", "statecrawl.demo.site", "--pages", str(pages),
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    print(f"site: python demo server, {line.strip()}", flush=True)
    return proc, line.rsplit(" ", 1)[1].strip()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(setup: str, url: str, redis_url: str, redis_pid: int, workers: int = 1) -> tuple[float, float]:
    """Run one setup to completion; return (pages/s, CPU ms per page)."""
    result = Path(tempfile.mktemp(suffix=".jsonl"))
    env = {**os.environ, "REDIS_URL": redis_url, "BENCH_RESULT": str(result),
           "BENCH_CRAWL_ID": f"bench-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(ROOT)}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(SPIDER), "-a", f"url={url}/",
           *SETUPS[setup]]
    started = time.time()
    redis0 = _proc_cpu(redis_pid)
    procs = [subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    errors = [p.communicate()[1] for p in procs]
    redis_cpu = _proc_cpu(redis_pid) - redis0
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{setup} failed:\n" + "\n".join(e[-2000:] for e in errors))
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    result.unlink()
    pages = sum(r["responses"] for r in rows)
    if pages == 0:
        raise RuntimeError(f"{setup}: no page was crawled; is the site up at {url}?")
    cpu_ms = 1000 * (sum(r["cpu"] for r in rows) + redis_cpu) / pages
    if workers == 1:
        return pages / rows[0]["seconds"], cpu_ms
    first = min(r["end"] - r["seconds"] for r in rows)  # earliest first response
    return pages / (max(r["end"] for r in rows) - max(first, started)), cpu_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--setups", default=",".join(
                            [n for n in SETUPS if n != "statecrawl+counters"] + ["statecrawl x2"]),
                        help="comma-separated subset of: %(default)s")
    args = parser.parse_args()
    names = [n.strip() for n in args.setups.split(",") if n.strip()]
    unknown = set(names) - {*SETUPS, "statecrawl x2"}
    if unknown or "scrapy" not in names:
        parser.error(f"--setups must include scrapy and name only known setups (unknown: {unknown})")
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_port = start_redis(Path(tmp))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        site_proc, url = start_site(args.pages, args.server, Path(tmp))
        try:
            figures: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {n: [] for n in names}
            for r in range(args.rounds):
                for name in names:
                    if name == "statecrawl x2":
                        pps, ms = run("statecrawl", url, redis_url, redis_proc.pid, workers=2)
                    else:
                        pps, ms = run(name, url, redis_url, redis_proc.pid)
                    figures[name].append(pps)
                    cpu[name].append(ms)
                    print(f"round {r + 1}/{args.rounds}  {name:<14} {pps:8.1f} pages/s"
                          f"  {ms:6.2f} CPU ms/page", flush=True)
        finally:
            site_proc.terminate()
            redis_proc.terminate()
    base = statistics.median(figures["scrapy"])
    base_cpu = statistics.median(cpu["scrapy"])
    print(f"\n{args.pages}-page demo site, {args.rounds} rounds, medians:")
    frozen = statistics.median(figures["scrapy+freeze"]) if "scrapy+freeze" in names else None
    for name in names:
        med, ms = statistics.median(figures[name]), statistics.median(cpu[name])
        print(f"  {name:<14} {med:8.1f} pages/s  {med / base:5.2f}x scrapy"
              + (f"  {med / frozen:5.2f}x scrapy+freeze" if frozen else "")
              + f"   {ms:6.2f} CPU ms/page  {base_cpu / ms:5.2f}x scrapy's efficiency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
