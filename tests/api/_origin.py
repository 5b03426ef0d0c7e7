"""A tiny target site for scrape tests: a page, a header echo, a slow page, a 404; hits recorded.

*files* (``{path: (status, content type, body)}``) answer their paths as given (map tests:
sitemaps, robots.txt, pages of links); any other path is the scrape page."""

from __future__ import annotations

import html
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE = """<!doctype html><html lang="en"><head><title>Scrape me</title>
<meta name="description" content="A page for scrape tests"></head><body>
<nav><a href="/nav">Navigation</a></nav><div class="promo"><p>Sidebar note about other things</p></div>
<main><h1>Hello scrape</h1>
<p>This paragraph is the main content of the page, long enough to be kept by the main
content detection, with <a href="/other">a link to another page</a> in it.</p>
<p>{extra}</p></main></body></html>"""


class Origin:
    """``/page``, ``/echo`` (the ``X-Scrape-Secret`` header in the body), ``/slow?s=N``, ``/gone`` (404)."""

    def __init__(self, files: dict[str, tuple[int, str, bytes]] | None = None) -> None:
        self.files = dict(files or {})
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with origin.lock:
                    origin.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, extra = 200, ""
                if parts.path in origin.files:
                    status, kind, raw = origin.files[parts.path]
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if parts.path == "/echo":
                    extra = "secret=" + html.escape(self.headers.get("X-Scrape-Secret", "none"))
                elif parts.path == "/slow":
                    time.sleep(float(parse_qs(parts.query).get("s", ["2"])[0]))
                    extra = "slow page done"
                elif parts.path == "/gone":
                    status, extra = 404, "nothing here"
                body = PAGE.format(extra=extra).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.hits if p == path)

    def headers_of(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.hits if p == path]

    def __enter__(self) -> Origin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
