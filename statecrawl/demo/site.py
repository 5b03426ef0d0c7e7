"""A deterministic generated website, served on 127.0.0.1 for demos, tests and benchmarks.

Why a home-made site: every crawl test needs a target whose full URL set is known in
advance, so a test can assert "every page produced exactly one item and was fetched
exactly once". The site is rendered once into memory when the server starts and every
response is written with a single ``send`` (no Nagle/delayed-ACK stalls), so hundreds
of crawls and the benchmarks are not bottlenecked by it.

Layout (N = ``pages``; ``BASE`` = :attr:`DemoSite.url`; ``ALIAS`` = the same server
under the other loopback name, ``localhost:PORT`` when BASE uses 127.0.0.1)::

    /                      200 text/html  index: links to the pages, specials and ALIAS/external.html
    /page/{i}.html         200 text/html  i in 1..N; links to 2i+1, 2i+2 (if <= N), /, (7i % N)+1
    /orphan.html           200 text/html  linked from no page; only listed in /sitemap.xml
    /private/secret.html   200 text/html  Disallow-ed by robots.txt: a polite crawler never fetches it
    /external.html         200 text/html  linked only as ALIAS/external.html (off-site)
    /files/report.pdf      200 application/pdf
    /img/logo.png          200 image/png
    /missing.html          404 text/html  (every unknown path is a 404 too)
    /error.html            500 text/html
    /redirect-in           301 Location: /page/3.html           (same host)
    /redirect-out          302 Location: ALIAS/page/1.html      (other host name: off-site)
    /robots.txt            200 text/plain  User-agent: * / Disallow: /private/ / Sitemap: BASE/sitemap.xml
    /sitemap.xml           200 application/xml  /, /page/1..5.html, /orphan.html

Responses do not depend on the Host header or on the query string (both ignored).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from statecrawl.demo._content import HTML as _HTML
from statecrawl.demo._content import render as _render
from statecrawl.demo._content import simple_page as _simple

__all__ = ["DemoSite", "main", "write_site"]


def _encode(status: int, ctype: str, body: bytes, location: str) -> tuple[bytes, bytes]:
    """Status line and headers (minus the blank line) once, so serving a request is a dict lookup."""
    reason = BaseHTTPRequestHandler.responses[status][0]
    head = f"HTTP/1.1 {status} {reason}\r\nServer: statecrawl-demo\r\nContent-Type: {ctype}\r\n"
    head += f"Content-Length: {len(body)}\r\n" + (f"Location: {location}\r\n" if location else "")
    return head.encode("latin-1"), body


_NOT_FOUND = _encode(404, _HTML, _simple("Not found", "No such page on the demo site."), "")


def write_site(directory: str | Path, pages: int, base_url: str) -> None:
    """Dump the site as static files so another server (nginx, ``http.server``) can serve it in benchmarks.

    Only the 200 resources are written (``/`` as ``index.html``). A static server cannot
    reproduce the rest, so there ``/error.html``, ``/redirect-in`` and ``/redirect-out``
    are 404s like ``/missing.html``. Bodies are byte-identical to what :class:`DemoSite`
    serves when ``base_url`` equals its :attr:`~DemoSite.url`.
    """
    root = Path(directory)
    for path, (status, _type, body, _location) in _render(pages, base_url).items():
        if status != 200:
            continue
        target = root / ("index.html" if path == "/" else path.lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


class _Handler(BaseHTTPRequestHandler):
    """Serves pre-rendered responses; status line, headers and body go out in one write."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections give their thread back eventually
    server: _Server
    agent = ""  # the request's User-Agent, kept for the request log

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        site = self.server.site
        if send_body:
            with site._hits_lock:
                site.hits[self.path] += 1
                if site.record:
                    site.log.append((time.monotonic(), self.path, self.agent))
        path = self.path.split("?", 1)[0]
        delay = site.slow_paths.get(path, site.delay)
        if delay:
            time.sleep(delay)
        head, body = site._responses.get(path, _NOT_FOUND)
        if self.close_connection:
            head += b"Connection: close\r\n"
        self.wfile.write(head + b"\r\n" + body if send_body else head + b"\r\n")

    def parse_request(self) -> bool:
        """Read only what the site needs: the stdlib's email-based header parsing was 75% of a request."""
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            return super().parse_request()  # unusual request line: the stdlib answers it properly
        self.command, self.path, self.request_version = words
        self.agent = ""
        tokens: set[bytes] = set()
        length = 0
        for _ in range(100):
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"connection":
                tokens.update(token.strip() for token in value.lower().split(b","))
            elif name == b"content-length":
                length = int(value) if value.strip().isdigit() else 0
            elif name == b"user-agent":
                self.agent = value.strip().decode("latin-1")
            elif name == b"transfer-encoding":
                tokens.add(b"close")  # no request body decoding here: answer, then hang up
        else:
            tokens.add(b"close")  # over 100 header lines: the rest would be misread as a request
        self.rfile.read(length)
        http10 = self.request_version == "HTTP/1.0"
        self.close_connection = b"close" in tokens or (http10 and b"keep-alive" not in tokens)
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: hundreds of test crawls would otherwise flood stderr."""


class _Server(ThreadingHTTPServer):
    """Threading server sized for hundreds of concurrent connections, which it closes on stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # 128 overflowed (1 s SYN retries) with 300 connects from a busy process

    def __init__(self, address: tuple[str, int], site: DemoSite) -> None:
        self.site = site
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up keep-alive clients, so a stopped site really stops answering."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-response is normal under load; only report real bugs."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class DemoSite:
    """The demo site served from a background thread; use as a context manager.

    The crawl contract (what :meth:`page_urls` and :meth:`expected_urls` promise), for a
    crawl started at ``BASE/`` that stays on BASE's host, obeys robots.txt, reads the
    sitemap it names, deduplicates requests and follows same-host redirects:

    * every URL in :meth:`expected_urls` is requested exactly once (``hits[path] == 1``, with
      retries off); besides them only ``/robots.txt`` and ``/sitemap.xml`` are requested, and
      never ``/private/secret.html`` or ``/external.html``. (Checked with stock Scrapy 2.19.)
    * :meth:`page_urls` each yield one item: status 200, HTML. ``/orphan.html`` is only in
      the sitemap.
    * ``/missing.html`` -> 404, ``/error.html`` -> 500: an item if the spider lets errors
      through (``HTTPERROR_ALLOW_ALL``), else an errback. Retries add hits on the 500.
    * ``/files/report.pdf``, ``/img/logo.png`` -> 200 application/pdf, image/png. Scrapy's default
      ``LinkExtractor`` drops both (``IGNORED_EXTENSIONS``): pass ``deny_extensions=()``.
    * ``/redirect-in`` -> 301 to ``/page/3.html``, which page 1 also links. The dupefilter lets
      only the first request for page 3 through: page 3 gets one item either way, carrying
      ``/redirect-in`` in ``meta["redirect_urls"]`` only if the redirect came first; otherwise
      the redirect is dropped silently and ``/redirect-in`` has no item of its own.
    * ``/redirect-out`` -> 302 to ``ALIAS/page/1.html`` (off-site). Stock Scrapy drops the
      redirected request silently (stat ``offsite/filtered``): no callback, no errback. A
      spider that wants an item for it must take the 302 itself (``dont_redirect`` or
      ``handle_httpstatus_list``) and record it unfollowed.

    statecrawl's ``site`` spider does take redirects itself, so with it every URL of
    :meth:`expected_urls` gets exactly one item: ``/redirect-in`` a 301 item whose
    ``final_url`` is page 3, ``/redirect-out`` an ``OutOfScopeRedirect`` error item.
    """

    def __init__(
        self, pages: int = 60, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0, record: bool = False
    ) -> None:
        if pages < 1:
            raise ValueError(f"pages must be >= 1, got {pages}")
        self.pages, self.host, self.port, self.delay = pages, host, port, delay
        self.hits: collections.Counter[str] = collections.Counter()
        # With record=True, (time.monotonic(), path, User-Agent) of every GET on arrival, in order:
        # lets a test or benchmark time a re-fetch. requests_since() reads it thread-safely.
        self.record = record
        self.log: list[tuple[float, str]] = []
        self._hits_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        # path -> (status line + headers without the blank line, body), rendered once in start()
        self._responses: dict[str, tuple[bytes, bytes]] = {}
        self.slow_paths: dict[str, float] = {}  # path -> seconds of sleep instead of `delay`

    def _resources(self, base_url: str) -> dict[str, tuple[int, str, bytes, str]]:
        """(status, content type, body, Location) per path; subclasses add their own."""
        return _render(self.pages, base_url)

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:43211``; known once started."""
        if not self._url:
            raise RuntimeError("DemoSite.url is only known after start()")
        return self._url

    def start(self) -> DemoSite:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self)
        port = server.server_address[1]
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._url = f"http://{url_host}:{port}"
        self._responses = {path: _encode(*res) for path, res in self._resources(self._url).items()}
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"demo-site-{port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoSite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset_hits(self) -> None:
        """Forget the hits counted so far (and the request log)."""
        with self._hits_lock:
            self.hits.clear()
            self.log.clear()

    def requests_since(self, start: float) -> list[tuple[float, str, str]]:
        """The logged GETs (``record=True``) that arrived at or after monotonic time *start*."""
        with self._hits_lock:
            return [entry for entry in self.log if entry[0] >= start]

    def page_urls(self) -> list[str]:
        """Absolute URLs of the HTML pages a correct crawl produces a 200 item for: index, pages, orphan."""
        pages = (f"{self.url}/page/{i}.html" for i in range(1, self.pages + 1))
        return [f"{self.url}/", *pages, f"{self.url}/orphan.html"]

    def expected_urls(self) -> set[str]:
        """Every URL a correct crawl requests once: pages, errors, binaries, redirects (see the class doc)."""
        extra = ("/missing.html", "/error.html", "/files/report.pdf", "/img/logo.png", "/redirect-in", "/redirect-out")
        return set(self.page_urls()) | {self.url + path for path in extra}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C/SIGTERM; the first stdout line is ``serving N pages at URL`` for scripts to read."""
    parser = argparse.ArgumentParser(prog="python -m statecrawl.demo.site", description="Serve the demo site.")
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of sleep per request")
    parser.add_argument("--write", metavar="DIR", help="write the site as static files into DIR instead of serving")
    args = parser.parse_args(argv)
    if args.write:
        write_site(args.write, args.pages, f"http://{args.host}:{args.port}")
        print(f"wrote {args.pages} pages to {args.write}", flush=True)
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with DemoSite(args.pages, args.host, args.port, args.delay) as site:
        print(f"serving {args.pages} pages at {site.url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
