"""Start URLs pushed to a scrapy-redis spider while its worker is busy: picked up how fast?

Two scenarios, each run with the start-URL feed off
(``STATECRAWL_START_URLS_INTERVAL=0``: scrapy-redis' own reads on
``spider_idle`` only, as before), on (the default, 1 s), and on
scrapy-redis' own scheduler for reference:

* ``busy``: the worker crawls a backlog (site A, links followed) while URLs
  of site B are pushed at ``--rate`` per second; reports how many pushed URLs
  per minute left the key for the crawl while A was still being crawled,
  and how many of them were fetched in that window.
* ``pushed`` (scrapy-redis issue #74): the worker has only pushed URLs
  (site B, every 8th page slow: 1 s), pushed at ``--rate`` per second;
  reports pages fetched per minute.

    .venv/bin/python bench/start_urls.py --seconds 20 --rate 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import start_redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from statecrawl.demo.site import DemoSite  # noqa: E402

SPIDER = '''
from urllib.parse import urlsplit
from scrapy_redis.spiders import RedisSpider


class Pushed(RedisSpider):
    name = "pushed"
    redis_key = "bench:start_urls"

    def __init__(self, follow_port="", **kwargs):
        super().__init__(**kwargs)
        self.follow_port = int(follow_port or 0)

    def parse(self, response):
        yield {"url": response.url}
        if urlsplit(response.url).port == self.follow_port:
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href)
'''


#: (label, -s options): the feed off (before), on (after), and scrapy-redis' own scheduler
SETUPS = (
    ("feed off (before)", ("SCHEDULER=statecrawl.scheduler.Scheduler",
                           "DUPEFILTER_CLASS=statecrawl.dupefilter.RedisDupeFilter",
                           "STATECRAWL_START_URLS_INTERVAL=0")),
    ("feed on (after)", ("SCHEDULER=statecrawl.scheduler.Scheduler",
                         "DUPEFILTER_CLASS=statecrawl.dupefilter.RedisDupeFilter")),
    ("scrapy-redis", ("SCHEDULER=scrapy_redis.scheduler.Scheduler",
                      "DUPEFILTER_CLASS=scrapy_redis.dupefilter.RFPDupeFilter")),
)


def run(scenario: str, options: tuple[str, ...], seconds: float, rate: float, tmp: Path,
        port: int) -> dict[str, float]:
    client = redis.Redis(port=port)
    crawl_id = f"bench-{uuid.uuid4().hex[:8]}"
    client.delete("bench:start_urls", "pushed:requests", "pushed:dupefilter")
    backlog = DemoSite(pages=4000, delay=0.02) if scenario == "busy" else None
    pushed = DemoSite(pages=int(rate * seconds) + 10, delay=0.05)
    if scenario == "pushed":
        pushed.slow_paths = {f"/page/{i}.html": 1.0 for i in range(8, pushed.pages + 1, 8)}
    with pushed, (backlog or pushed):
        spider = tmp / "pushed.py"
        spider.write_text(SPIDER)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STATECRAWL_"))}
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "scrapy", "runspider", str(spider), "-s", "LOG_LEVEL=WARNING",
               *(x for o in options for x in ("-s", o)),
               "-s", f"REDIS_URL=redis://127.0.0.1:{port}/0",
               "-s", f"STATECRAWL_CRAWL_ID={crawl_id}",
               "-s", "ROBOTSTXT_OBEY=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
               "-a", f"follow_port={backlog.url.rsplit(':', 1)[1] if backlog else 0}"]
        if backlog is not None:
            client.lpush("bench:start_urls", backlog.url + "/")
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + (60 if backlog else 4)  # the worker starts (and is
            while time.monotonic() < deadline and proc.poll() is None and (  # busy with A)
                    backlog is None or sum(backlog.hits.values()) < 100):
                time.sleep(0.1)
            done = threading.Event()
            urls = [f"{pushed.url}/page/{i}.html" for i in range(1, pushed.pages + 1)]

            sent = [0]

            def push() -> None:
                start = time.monotonic()
                while not done.is_set() and sent[0] < len(urls):
                    time.sleep(max(0.0, start + sent[0] / rate - time.monotonic()))
                    client.lpush("bench:start_urls", urls[sent[0]])
                    sent[0] += 1

            pusher = threading.Thread(target=push)
            pushed.reset_hits()
            begin, a_before = time.monotonic(), sum(backlog.hits.values()) if backlog else 0
            pusher.start()
            time.sleep(seconds)
            done.set()
            pusher.join()
            elapsed = time.monotonic() - begin
            waiting = client.llen("bench:start_urls")
            fetched = sum(pushed.hits.values())
            a_left = sum(backlog.hits.values()) if backlog else 0
            a_during = a_left - a_before
        finally:
            proc.terminate()
            proc.wait(30)
    pushed_n = sent[0]
    return {"pushed/min": pushed_n / elapsed * 60,
            "taken/min": (pushed_n - waiting) / elapsed * 60,
            "fetched/min": fetched / elapsed * 60,
            "backlog fetched/min": a_during / elapsed * 60,
            "backlog left": (backlog.pages - a_left) if backlog else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=60, help="URLs pushed per second")
    parser.add_argument("--scenarios", default="busy,pushed")
    parser.add_argument("--setups", default=",".join(label for label, _ in SETUPS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            for scenario in args.scenarios.split(","):
                for label, options in SETUPS:
                    if label not in args.setups.split(","):
                        continue
                    got = run(scenario, options, args.seconds, args.rate, Path(tmp), port)
                    print(f"{scenario:7} {label:18} " + "  ".join(
                        f"{k} {v:7.0f}" for k, v in got.items()), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
