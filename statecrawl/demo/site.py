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
import html
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DemoSite", "main", "write_site"]

_HTML = "text/html; charset=utf-8"
_WORDS = (
    "crawl frontier request response scheduler spider item pipeline middleware redis queue fingerprint duplicate "
    "robots sitemap link depth priority retry throttle latency worker shard lease checkpoint resume state export "
    "feed selector parser domain host politeness budget batch stream signal stats"
).split()
_SITEMAP_PAGES = 5
# path -> (status, content type, body, Location or ""); built per site: bodies embed BASE/ALIAS.
_Resources = dict[str, tuple[int, str, bytes, str]]


def _words(seed: int, count: int) -> str:
    """Deterministic pseudo-random words (an LCG, so output never depends on ``random``)."""
    out, state = [], seed * 2654435761 % 2**32 or 1
    for _ in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        out.append(_WORDS[state % len(_WORDS)])
    return " ".join(out).capitalize() + "."


def _document(title: str, description: str, main: str) -> bytes:
    nav = '<a href="/">Home</a> | <a href="/page/1.html">First page</a> | <a href="../page/2.html">Second page</a>'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<meta name="description" content="{html.escape(description)}">\n'
        f"</head>\n<body>\n<nav>{nav}</nav>\n<main>\n{main}</main>\n"
        "<footer><p>statecrawl demo site. Generated content, no rights reserved.</p></footer>\n"
        "</body>\n</html>\n"
    ).encode()


def _index(alias: str) -> bytes:
    links = [
        ("page/1.html", "Page 1"), ("/page/2.html", "Page 2"), ("/private/secret.html", "Private area"),
        ("/files/report.pdf", "Annual report (PDF)"), ("/img/logo.png", "Logo (PNG)"),
        ("/missing.html", "A page that does not exist"), ("/error.html", "A page that fails"),
        ("/redirect-in", "Moved page"), ("/redirect-out", "Moved elsewhere"),
        (f"{alias}/external.html", "An external site"),
    ]
    items = "".join(f'<li><a href="{html.escape(h)}">{t}</a></li>\n' for h, t in links)
    main = f"<h1>Demo site</h1>\n<p>{_words(0, 24)}</p>\n<p>{_words(100000, 18)}</p>\n<ul>\n{items}</ul>\n"
    return _document("Demo site", "Index of the statecrawl demo site.", main)


def _page(i: int, pages: int) -> bytes:
    # child links rotate through three spellings of the same URL, so URL joining is exercised
    forms, children = ("{}.html", "../page/{}.html", "/page/{}.html"), (2 * i + 1, 2 * i + 2)
    links = [f'<a href="{forms[(i + k) % 3].format(c)}">Child {c}</a>' for k, c in enumerate(children) if c <= pages]
    cross = (i * 7) % pages + 1
    links += ['<a href="../">Back to index</a>', f'<a href="/page/{cross}.html">See also page {cross}</a>']
    paragraphs = "".join(f"<p>{_words(i * 10 + k, 20 + (i + k) % 15)}</p>\n" for k in range(2 + i % 2))
    items = "".join(f"<li>{_words(i * 100 + k, 3)}</li>" for k in range(3 + i % 3))
    extra = ""
    if i % 10 == 0:
        rows = "".join(f"<tr><td>{r}</td><td>{i * r}</td></tr>" for r in range(1, 4))
        code = html.escape(f"def page_{i}(x: int) -> int:\n    return x * {i} if x > 0 else -x\n")
        extra = (
            f"<table>\n<thead><tr><th>n</th><th>n * {i}</th></tr></thead>\n<tbody>{rows}</tbody>\n</table>\n"
            f'<pre><code class="language-python">{code}</code></pre>\n'
        )
    main = f"<h1>Page {i}</h1>\n{paragraphs}<ul>{items}</ul>\n{extra}<p>{' | '.join(links)}</p>\n"
    return _document(f"Page {i}", f"Demo page {i} of {pages}: {_words(i, 6)}", main)


def _simple(title: str, text: str) -> bytes:
    return _document(title, text, f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(text)}</p>\n")


@lru_cache(maxsize=1)
def _pdf() -> bytes:
    """A one-page PDF with a correct xref table (offsets computed, not hard-coded)."""
    stream = b"BT /F1 18 Tf 20 50 Td (statecrawl demo report) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@lru_cache(maxsize=1)
def _png() -> bytes:
    """A 16x16 RGB gradient PNG with valid CRCs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(v for x in range(16) for v in (x * 16, y * 16, 128)) for y in range(16))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _alias(base_url: str) -> str:
    """BASE under the other loopback host name: same server, different host, so off-site."""
    parts = urlsplit(base_url)
    other = "127.0.0.1" if parts.hostname == "localhost" else "localhost"
    return f"{parts.scheme}://{other}" + (f":{parts.port}" if parts.port else "")


def _render(pages: int, base_url: str) -> _Resources:
    """Every resource of the site. Called once per server start / write_site."""
    if pages < 1:
        raise ValueError(f"pages must be >= 1, got {pages}")
    base, alias = base_url.rstrip("/"), _alias(base_url)
    sitemap_paths = ["/", *(f"/page/{i}.html" for i in range(1, min(pages, _SITEMAP_PAGES) + 1)), "/orphan.html"]
    sitemap = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        + "".join(f"  <url><loc>{base}{p}</loc></url>\n" for p in sitemap_paths)
        + "</urlset>\n"
    )
    robots = f"User-agent: *\nDisallow: /private/\n\nSitemap: {base}/sitemap.xml\n"
    res: _Resources = {
        "/": (200, _HTML, _index(alias), ""),
        "/orphan.html": (200, _HTML, _simple("Orphan page", "Only the sitemap links here."), ""),
        "/private/secret.html": (200, _HTML, _simple("Secret", "robots.txt disallows this page."), ""),
        "/external.html": (200, _HTML, _simple("External page", "Reached through another host name."), ""),
        "/files/report.pdf": (200, "application/pdf", _pdf(), ""),
        "/img/logo.png": (200, "image/png", _png(), ""),
        "/error.html": (500, _HTML, _simple("Server error", "This page always fails."), ""),
        "/robots.txt": (200, "text/plain; charset=utf-8", robots.encode(), ""),
        "/sitemap.xml": (200, "application/xml", sitemap.encode(), ""),
        "/redirect-in": (301, _HTML, _simple("Moved", "See /page/3.html"), "/page/3.html"),
        "/redirect-out": (302, _HTML, _simple("Moved", "See the other host"), f"{alias}/page/1.html"),
    }
    for i in range(1, pages + 1):
        res[f"/page/{i}.html"] = (200, _HTML, _page(i, pages), "")
    return res


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

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        site = self.server.site
        if send_body:
            with site._hits_lock:
                site.hits[self.path] += 1
        if site.delay:
            time.sleep(site.delay)
        head, body = site._responses.get(self.path.split("?", 1)[0], _NOT_FOUND)
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
    """

    def __init__(self, pages: int = 60, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0) -> None:
        if pages < 1:
            raise ValueError(f"pages must be >= 1, got {pages}")
        self.pages, self.host, self.port, self.delay = pages, host, port, delay
        self.hits: collections.Counter[str] = collections.Counter()
        self._hits_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        # path -> (status line + headers without the blank line, body), rendered once in start()
        self._responses: dict[str, tuple[bytes, bytes]] = {}

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
        self._responses = {path: _encode(*res) for path, res in _render(self.pages, self._url).items()}
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
        with self._hits_lock:
            self.hits.clear()

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
