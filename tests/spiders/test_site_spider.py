"""The `site` spider end to end: real scrapy processes, real Redis, the demo site."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.item_codec import load_item
from tests.conftest import RedisServer, free_port, scrapy_crawl, worker_env


def items_in_redis(server: RedisServer, crawl_id: str) -> dict[str, dict[str, Any]]:
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    return {k.decode(): load_item(v) for k, v in raw.items()}


def crawl(server: RedisServer, site: DemoSite, crawl_id: str, out: Path, *args: str) -> Any:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", *args],
                          worker_env(server.url, out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_full_crawl_items_files_and_feed(redis_server: RedisServer, site: DemoSite,
                                         crawl_id: str, tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path)
    items = items_in_redis(redis_server, crawl_id)
    assert set(items) == site.expected_urls()
    page = items[f"{site.url}/page/10.html"]
    assert page["status"] == 200 and page["title"] == "Page 10" and page["language"] == "en"
    assert page["renderer"] == "http" and page["crawl_id"] == crawl_id and page["error"] is None
    assert page["markdown"].startswith("# Page 10") and page["description"]
    assert {"url": f"{site.url}/page/21.html", "text": "Child 21"} in page["links"]
    assert page["depth"] >= 1 and page["html"] is None and page["raw_html"] is None
    # bad input becomes items, never a crash
    assert items[f"{site.url}/missing.html"]["error"] == {"type": "HttpError", "message": "HTTP 404"}
    assert items[f"{site.url}/error.html"]["status"] == 500
    pdf = items[f"{site.url}/files/report.pdf"]
    assert (pdf["content_type"], pdf["markdown"], pdf["error"]) == ("application/pdf", "", None)
    out = items[f"{site.url}/redirect-out"]
    assert out["error"]["type"] == "OutOfScopeRedirect" and "localhost" in out["final_url"]
    assert items[f"{site.url}/redirect-in"]["final_url"] == f"{site.url}/page/3.html"
    # only in the sitemap, never fetched: robots-disallowed and off-site pages
    assert f"{site.url}/orphan.html" in items
    assert site.hits["/private/secret.html"] == 0 and site.hits["/external.html"] == 0
    # outputs: Markdown files with front matter, and the JSON Lines feed
    md = (tmp_path / "markdown" / site.url.split("//")[1].replace(":", "_") / "page" / "10.md").read_text()
    assert md.startswith(f'---\nurl: "{site.url}/page/10.html"\ntitle: "Page 10"\n')
    [feed] = tmp_path.glob(f"pages-{crawl_id}-*.jsonl")
    assert {json.loads(line)["url"] for line in feed.read_text().splitlines()} == site.expected_urls()
    status = redis_server.client().hget(f"sc:{{{crawl_id}}}:meta", "state")
    assert status == b"finished"
    # crawl-wide counters: /error.html was retried twice (RETRY_TIMES=2), then failed
    stats = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
    assert int(stats[b"retried"]) == 2 and int(stats[b"acked"]) == int(stats[b"leased"])


def test_rerun_of_a_finished_crawl_fetches_nothing(redis_server: RedisServer, site: DemoSite,
                                                    crawl_id: str, tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path)
    site.reset_hits()
    crawl(redis_server, site, crawl_id, tmp_path)
    fetched = {p: n for p, n in site.hits.items() if p != "/robots.txt"}
    assert fetched == {}


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_max_depth(redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path,
                   depth: int) -> None:
    crawl(redis_server, site, crawl_id, tmp_path, "-a", f"max_depth={depth}")
    items = items_in_redis(redis_server, crawl_id)
    assert max(i["depth"] for i in items.values()) == depth
    if depth == 0:
        assert set(items) == {f"{site.url}/"}


def test_exclude_skips_matching_urls(redis_server: RedisServer, site: DemoSite, crawl_id: str,
                                     tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path, "-a", "exclude=/page/")
    urls = set(items_in_redis(redis_server, crawl_id))
    assert f"{site.url}/" in urls and f"{site.url}/orphan.html" in urls
    assert not any("/page/" in u for u in urls)


def test_include_keeps_only_matching_urls(redis_server: RedisServer, site: DemoSite,
                                          crawl_id: str, tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path, "-a", r"include=/page/[1-4]\.html$")
    urls = set(items_in_redis(redis_server, crawl_id))
    allowed = {f"{site.url}/"} | {f"{site.url}/page/{i}.html" for i in range(1, 5)}
    assert urls <= allowed and f"{site.url}/page/4.html" in urls


def test_limit_is_crawl_wide(redis_server: RedisServer, site: DemoSite, crawl_id: str,
                             tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path, "-a", "limit=10")
    stats = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
    # the limit counts pages: robots.txt and the sitemaps are fetched besides them
    assert int(stats[b"admitted"]) == 10 and int(stats[b"limit_dropped"]) > 0
    assert int(stats[b"enqueued"]) >= 10 + 2
    denied = int(stats.get(b"robots_denied", 0))
    assert len(items_in_redis(redis_server, crawl_id)) + denied == 10


def test_allow_subdomains_flag_is_validated(redis_server: RedisServer, site: DemoSite,
                                            crawl_id: str, tmp_path: Path) -> None:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", "allow_subdomains=maybe"],
                          worker_env(redis_server.url, tmp_path))
    assert result.returncode != 0 and "allow_subdomains= expects true or false" in result.stderr


@pytest.mark.parametrize("url, message", [
    ("not a url", "invalid start URL"),
    ("ftp://example.com/", "invalid start URL"),
    ("", "no start URL"),
])
def test_invalid_start_url_is_a_clear_error(redis_server: RedisServer, tmp_path: Path,
                                            url: str, message: str) -> None:
    result = scrapy_crawl(["-a", f"url={url}"], worker_env(redis_server.url, tmp_path))
    assert result.returncode != 0 and message in result.stderr


def test_unreachable_host_gives_an_error_item(redis_server: RedisServer, crawl_id: str,
                                              tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    result = scrapy_crawl(["-a", f"url={url}", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0"],
                          worker_env(redis_server.url, tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    [item] = items_in_redis(redis_server, crawl_id).values()
    assert item["url"] == url and item["status"] is None
    assert "ConnectionRefused" in item["error"]["type"]


def test_redis_down_at_start_fails_clearly(site: DemoSite, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = scrapy_crawl(["-a", f"url={site.url}/"], worker_env(url, tmp_path), timeout=60)
    assert result.returncode != 0
    assert "cannot reach Redis at" in result.stderr
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url).ping()


def test_formats_html_and_raw_html(redis_server: RedisServer, site: DemoSite, crawl_id: str,
                                   tmp_path: Path) -> None:
    crawl(redis_server, site, crawl_id, tmp_path, "-a", "formats=html,raw_html", "-a", "max_depth=1")
    page = items_in_redis(redis_server, crawl_id)[f"{site.url}/page/1.html"]
    assert page["markdown"] == ""  # not asked for
    assert page["html"].startswith("<") and "<h1>Page 1</h1>" in page["html"]
    assert f'href="{site.url}/page/3.html"' in page["html"]  # links made absolute
    assert "<nav" not in page["html"] and "<script" not in page["html"]
    assert page["raw_html"].startswith("<!DOCTYPE html>") and page["links"]


def test_unknown_format_is_a_clear_error(redis_server: RedisServer, site: DemoSite,
                                         crawl_id: str, tmp_path: Path) -> None:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", "formats=markdown,pdf"],
                          worker_env(redis_server.url, tmp_path))
    assert result.returncode != 0
    assert "-a formats= takes markdown, html, raw_html, links; unknown: pdf" in (
        result.stdout + result.stderr)


# -- bodies served as HTML that are not -------------------------------------------------------

def _html(title: str, body: str = "") -> bytes:
    return f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>" \
        f"{body}</body></html>".encode()


class FilesSite:
    """Serves files as ``text/html``, as misconfigured servers do, and logs every path asked."""

    TRAP = "<a href='/from-binary'>a link inside a binary body</a>"

    def __init__(self) -> None:
        rng = random.Random(7)
        noise = bytearray(rng.randbytes(8192))
        noise[100:100 + len(self.TRAP)] = self.TRAP.encode()
        # no NUL byte, but one in ten bytes a control character
        controls = bytes(rng.choice(b"abcd efgh\x01") for _ in range(5000))
        wide = "<html><head><title>Wide page</title></head><body><h1>Wide page</h1>" \
            "<p>Ünïcödé text</p><a href='/from-utf16'>next</a></body></html>"
        links = "".join(f"<a href='{p}'>{p}</a> " for p in
                        ("/report", "/photo", "/noise", "/controls", "/utf16", "/plain"))
        self.pages: dict[str, bytes] = {
            "/": _html("Files", links),
            "/report": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n(" + self.TRAP.encode()
                       + b")\nendobj\n%%EOF\n",
            "/photo": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + self.TRAP.encode(),
            "/noise": bytes(noise),
            "/controls": controls + self.TRAP.encode(),
            "/utf16": wide.encode("utf-16"),  # with its BOM, and no charset in the header
            "/plain": _html("Plain", "<p>Just text.</p><a href='/from-plain'>next</a>"),
            "/from-plain": _html("From plain"),
            "/from-utf16": _html("From UTF-16"),
            "/from-binary": _html("Never"),
        }
        self.asked: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.asked.append(self.path)
                body = site.pages.get(self.path)
                if self.path == "/robots.txt":
                    status, ctype, body = 200, "text/plain", b"User-agent: *\nAllow: /\n"
                else:
                    status, ctype = (200, "text/html") if body is not None else (404, "text/html")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def files_site() -> Iterator[FilesSite]:
    site = FilesSite()
    yield site
    site.close()


def test_binary_bodies_served_as_html(redis_server: RedisServer, files_site: FilesSite,
                                      crawl_id: str, tmp_path: Path) -> None:
    result = scrapy_crawl(["-a", f"url={files_site.url}/", "-a", f"crawl_id={crawl_id}"],
                          worker_env(redis_server.url, tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    items = items_in_redis(redis_server, crawl_id)
    url = files_site.url
    # known types: an item like a followed file's, with the type sniffed from the body
    for path, mime in (("/report", "application/pdf"), ("/photo", "image/png")):
        item = items[url + path]
        assert (item["content_type"], item["error"], item["markdown"], item["links"],
                item["title"]) == (mime, None, "", [], None), item
    # unknown binary: an error item, no Markdown
    for path in ("/noise", "/controls"):
        item = items[url + path]
        assert item["error"] == {"type": "BinaryContent", "message": f"{url}{path} is served "
                                 "as text/html but the body is binary"}, item
        assert (item["markdown"], item["links"], item["content_type"]) == ("", [], "text/html")
    # no link was taken from a binary body
    assert "/from-binary" not in files_site.asked and f"{url}/from-binary" not in items
    # text still works: plain HTML, and UTF-16 with its BOM
    wide = items[url + "/utf16"]
    assert (wide["error"], wide["title"], wide["content_type"]) == (None, "Wide page", "text/html")
    assert "Ünïcödé text" in wide["markdown"]
    assert {"url": f"{url}/from-utf16", "text": "next"} in wide["links"]
    assert items[url + "/plain"]["markdown"].startswith("# Plain")
    assert items[url + "/from-utf16"]["error"] is None
    assert items[url + "/from-plain"]["error"] is None
