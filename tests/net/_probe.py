"""A real crawl for the net guard tests: ``python -m tests.net._probe CONFIG.json``.

A plain Scrapy ``CrawlerProcess`` with the statecrawl add-on (so the Redis
frontier, the download handlers and the guard exactly as a worker has them)
and a spider that requests each URL of the config once and records what
became of it. Writes ``{"outcomes": {url: ...}, "stats": {...}, "seconds": ...}``
to the config's ``out`` path.

Config keys: ``urls``, ``settings`` (Scrapy settings of the process, on top
of the ones below), ``out``, ``spider_settings`` (the spider's
``custom_settings``), and ``dns``: ``{host: [[addresses], ...]}``, a
scripted DNS for those names -- the n-th lookup of a host gets the n-th
answer (the last one repeats); other names go to the system's resolver.
The scripted answers reach the crawl through Twisted's own ``GAIResolver``
(its ``getaddrinfo`` parameter), installed as the reactor's resolver before
Scrapy wraps it with the guarded one, and, with the guard on, through the
browser guard proxy's ``getaddrinfo`` parameter (the process's proxy is
started with it before the add-on asks for it): nothing of Scrapy, Twisted
or the guard is replaced.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import CrawlerProcess
from twisted.python.failure import Failure


class Probe(Spider):
    name = "probe"
    custom_settings: dict[str, Any] = {}

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = urls
        self.outcomes: dict[str, dict[str, Any]] = {}

    async def start(self):  # type: ignore[no-untyped-def]
        for url in self.urls:
            yield Request(url, callback=self.fetched, errback=self.failed, dont_filter=True,
                          meta={"probe_url": url})

    def fetched(self, response: Any) -> None:
        self.outcomes[response.meta["probe_url"]] = {
            "status": response.status, "url": response.url, "body": response.text[:4000]}

    def failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        self.outcomes[request.meta["probe_url"]] = {
            "error": type(failure.value).__name__, "message": str(failure.value),
            "retries": request.meta.get("retry_times", 0)}


def scripted_getaddrinfo(answers: dict[str, list[list[str]]]) -> Any:
    lookups: defaultdict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def getaddrinfo(host: str, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                    flags: int = 0) -> list[Any]:
        if host not in answers:
            return socket.getaddrinfo(host, port, family, type, proto, flags)
        with lock:
            n = lookups[host]
            lookups[host] += 1
        result = []
        for address in answers[host][min(n, len(answers[host]) - 1)]:
            if ":" in address:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
        return result

    return getaddrinfo


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    settings = {
        "ADDONS": {"statecrawl.Addon": 0},
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "STATECRAWL_OUTPUT_DIR": "",
        "STATECRAWL_STORE_ITEMS": False,
        "DOWNLOAD_TIMEOUT": 15,
        "CONCURRENT_REQUESTS": 1,
        **config.get("settings", {}),
    }
    started = time.monotonic()
    if config.get("dns") and settings.get("STATECRAWL_NET_GUARD"):
        from scrapy.settings import Settings

        from statecrawl.net.addresses import Allowlist
        from statecrawl.net.proxy import shared_proxy

        shared_proxy(Allowlist.from_settings(Settings(settings)),
                     getaddrinfo=scripted_getaddrinfo(config["dns"]))
    process = CrawlerProcess(settings)
    Probe.custom_settings = config.get("spider_settings", {})
    crawler = process.create_crawler(Probe)
    opened: list[Spider] = []  # a worker that fails takes the spider off the crawler (exit status 1)
    crawler.signals.connect(lambda spider: opened.append(spider), signal=signals.spider_opened, weak=False)
    process.crawl(crawler, urls=config["urls"])
    if config.get("dns"):
        from twisted.internet import reactor as running
        from twisted.internet._resolver import GAIResolver

        running.installNameResolver(  # type: ignore[attr-defined]
            GAIResolver(running, getaddrinfo=scripted_getaddrinfo(config["dns"])))
    process.start()
    from twisted.internet import reactor

    assert opened and crawler.stats is not None
    stats = {k: v for k, v in crawler.stats.get_stats().items() if isinstance(v, (int, float, str))}
    Path(config["out"]).write_text(json.dumps({
        "outcomes": opened[0].outcomes,  # type: ignore[attr-defined]
        "failed": bool(process.bootstrap_failed),  # what makes `scrapy crawl` exit with status 1
        "stats": stats, "seconds": time.monotonic() - started,
        "resolver": type(getattr(reactor, "nameResolver", None)).__name__,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
