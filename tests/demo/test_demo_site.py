"""Tests for statecrawl.demo.site: the deterministic site every crawl test relies on.

The contract checked here is the one the spider tests build on: what each URL
returns, that a robots-obeying same-host BFS from ``/`` plus the sitemap finds
exactly :meth:`DemoSite.page_urls`, and that ``hits`` counts every GET.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import urllib.robotparser
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import lxml.html
import pytest

from statecrawl.demo import DemoSite, write_site

PAGES = 60
ROOT = Path(__file__).resolve().parents[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects; errors are returned, not raised."""
    try:
        with _OPENER.open(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def links(base: str, body: bytes) -> list[str]:
    """Absolute ``<a href>`` targets, fragments dropped (what a crawler's link extractor yields)."""
    return [urldefrag(urljoin(base, href)).url for href in lxml.html.fromstring(body).xpath("//a/@href")]


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with DemoSite(pages=PAGES) as running:
        yield running


def test_url_needs_start() -> None:
    with pytest.raises(RuntimeError):
        DemoSite().url
    with pytest.raises(ValueError):
        DemoSite(pages=0)


def test_robots_txt(site: DemoSite) -> None:
    status, headers, body = fetch(site.url + "/robots.txt")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = body.decode().splitlines()
    assert "User-agent: *" in lines and "Disallow: /private/" in lines
    assert f"Sitemap: {site.url}/sitemap.xml" in lines
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(lines)
    assert not parser.can_fetch("statecrawl", site.url + "/private/secret.html")
    assert parser.can_fetch("statecrawl", site.url + "/page/1.html")


def test_sitemap(site: DemoSite) -> None:
    status, headers, body = fetch(site.url + "/sitemap.xml")
    assert status == 200 and headers["Content-Type"] == "application/xml"
    ns = {"sm": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [loc.text for loc in ET.fromstring(body).findall("sm:url/sm:loc", ns)]
    assert locs[0] == site.url + "/" and site.url + "/orphan.html" in locs
    assert site.url + "/page/1.html" in locs
    assert set(locs) <= set(site.page_urls())


@pytest.mark.parametrize(
    ("path", "status", "ctype"),
    [
        ("/", 200, "text/html; charset=utf-8"),
        ("/page/1.html", 200, "text/html; charset=utf-8"),
        (f"/page/{PAGES}.html", 200, "text/html; charset=utf-8"),
        ("/orphan.html", 200, "text/html; charset=utf-8"),
        ("/private/secret.html", 200, "text/html; charset=utf-8"),
        ("/files/report.pdf", 200, "application/pdf"),
        ("/img/logo.png", 200, "image/png"),
        ("/missing.html", 404, "text/html; charset=utf-8"),
        (f"/page/{PAGES + 1}.html", 404, "text/html; charset=utf-8"),
        ("/nowhere/at/all", 404, "text/html; charset=utf-8"),
        ("/error.html", 500, "text/html; charset=utf-8"),
    ],
)
def test_status_and_content_type(site: DemoSite, path: str, status: int, ctype: str) -> None:
    got_status, headers, body = fetch(site.url + path)
    assert (got_status, headers["Content-Type"]) == (status, ctype)
    assert int(headers["Content-Length"]) == len(body) > 0


def test_redirects(site: DemoSite) -> None:
    status, headers, _ = fetch(site.url + "/redirect-in")
    assert status == 301 and urljoin(site.url + "/redirect-in", headers["Location"]) == site.url + "/page/3.html"
    status, headers, _ = fetch(site.url + "/redirect-out")
    target = urlsplit(headers["Location"])
    assert status == 302 and target.hostname == "localhost" and target.path == "/page/1.html"
    assert target.port == urlsplit(site.url).port


def test_host_header_independent(site: DemoSite) -> None:
    alias = site.url.replace("127.0.0.1", "localhost")
    assert fetch(alias + "/page/7.html")[2] == fetch(site.url + "/page/7.html")[2]
    assert fetch(alias + "/external.html")[0] == 200


def test_binaries_are_valid(site: DemoSite) -> None:
    pdf = fetch(site.url + "/files/report.pdf")[2]
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    startxref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[startxref:].startswith(b"xref")
    png = fetch(site.url + "/img/logo.png")[2]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, kinds = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + data)
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_page_structure(site: DemoSite) -> None:
    for i in (1, 7, 10, PAGES):
        doc = lxml.html.fromstring(fetch(f"{site.url}/page/{i}.html")[2])
        assert doc.get("lang") == "en" and doc.findtext(".//title") == f"Page {i}"
        assert doc.xpath("//meta[@name='description']/@content")[0]
        assert doc.xpath("//nav//a") and doc.xpath("//footer") and doc.xpath("//main/h1")
        assert 2 <= len(doc.xpath("//main/p[not(a)]")) <= 3 and doc.xpath("//main/ul/li")
        has_extras = bool(doc.xpath("//table")) and bool(doc.xpath("//pre/code[@class='language-python']"))
        assert has_extras == (i % 10 == 0)
    docs = [lxml.html.fromstring(fetch(f"{site.url}/page/{i}.html")[2]) for i in (1, 2, 3)]
    hrefs = {href for doc in docs for href in doc.xpath("//a/@href")}
    for form in (r"\d+\.html", r"\.\./page/\d+\.html", r"/page/\d+\.html", r"\.\./"):  # URL joining is exercised
        assert any(re.fullmatch(form, href) for href in hrefs), form
    bodies = {fetch(f"{site.url}/page/{i}.html")[2].split(b"<main>")[1] for i in range(1, 11)}
    assert len(bodies) == 10  # the text varies by page


def test_bfs_reaches_every_page(site: DemoSite) -> None:
    """A polite same-host crawl from / plus the sitemap sees exactly the contract's URLs."""
    robots = urllib.robotparser.RobotFileParser()
    robots.parse(fetch(site.url + "/robots.txt")[2].decode().splitlines())
    host = urlsplit(site.url).netloc
    start = [site.url + "/"]
    seen, frontier, depth = set(start), start, 0
    requested, ok_pages, offsite = set(), set(), set()
    while frontier:
        following = []
        for url in frontier:
            requested.add(url)
            status, headers, body = fetch(url)
            if status == 200 and headers["Content-Type"].startswith("text/html"):
                ok_pages.add(url)
            candidates = links(url, body) if headers["Content-Type"].startswith("text/html") else []
            if status in (301, 302):
                candidates = [urljoin(url, headers["Location"])]
            for link in candidates:
                if urlsplit(link).netloc != host:
                    offsite.add(link)
                elif link not in seen and robots.can_fetch("*", link):
                    seen.add(link)
                    following.append(link)
        frontier, depth = following, depth + 1
    assert ok_pages == set(site.page_urls()) - {site.url + "/orphan.html"}
    assert site.url + "/private/secret.html" not in requested
    alias = site.url.replace("127.0.0.1", "localhost")
    assert offsite == {alias + "/external.html", alias + "/page/1.html"}
    assert requested | {site.url + "/orphan.html"} == site.expected_urls()
    assert depth <= PAGES.bit_length() + 3  # a binary tree: depth ~ log2(N)


def test_hits_counter() -> None:
    with DemoSite(pages=5) as small:
        for path in ("/", "/page/2.html", "/page/2.html", "/missing.html", "/page/2.html?x=1"):
            fetch(small.url + path)
        assert small.hits == {"/": 1, "/page/2.html": 2, "/missing.html": 1, "/page/2.html?x=1": 1}
        small.reset_hits()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: fetch(f"{small.url}/page/{i % 5 + 1}.html")[0], range(400)))
        assert statuses == [200] * 400
        assert sum(small.hits.values()) == 400 and all(small.hits[f"/page/{i}.html"] == 80 for i in range(1, 6))


def test_keep_alive_and_stop_hangs_up() -> None:
    small = DemoSite(pages=5).start()
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(small.url).port, timeout=5)
    for path in ("/", "/page/1.html", "/missing.html", "/img/logo.png"):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert len(resp.read()) == int(resp.headers["Content-Length"]) and not resp.will_close
    assert small.hits["/"] == 1
    small.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/")
        conn.getresponse().read()
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", urlsplit(small.url).port), timeout=2).close()


def test_many_concurrent_connections(site: DemoSite) -> None:
    """Hundreds of sockets opened at once must all be answered (listen backlog, threads)."""
    port = urlsplit(site.url).port
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(300)]
    for conn in conns:
        conn.connect()
    barrier = threading.Barrier(len(conns))

    def one(conn: http.client.HTTPConnection) -> int:
        barrier.wait()
        conn.request("GET", "/page/5.html")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status

    with ThreadPoolExecutor(len(conns)) as pool:
        assert list(pool.map(one, conns)) == [200] * len(conns)


def test_delay() -> None:
    with DemoSite(pages=3, delay=0.2) as slow:
        started = time.monotonic()
        assert fetch(slow.url + "/page/1.html")[0] == 200
        assert time.monotonic() - started >= 0.2


def test_write_site_matches_served(site: DemoSite, tmp_path: Path) -> None:
    write_site(tmp_path, PAGES, site.url)
    for path, name in [("/", "index.html"), ("/page/1.html", "page/1.html"), ("/page/10.html", "page/10.html"),
                       ("/orphan.html", "orphan.html"), ("/robots.txt", "robots.txt"),
                       ("/sitemap.xml", "sitemap.xml"), ("/files/report.pdf", "files/report.pdf"),
                       ("/img/logo.png", "img/logo.png")]:
        assert (tmp_path / name).read_bytes() == fetch(site.url + path)[2], path
    assert not (tmp_path / "error.html").exists() and not (tmp_path / "missing.html").exists()
    assert len(list((tmp_path / "page").iterdir())) == PAGES


def test_deterministic() -> None:
    with DemoSite(pages=12) as one, DemoSite(pages=12) as two:
        for path in ("/", "/page/10.html", "/sitemap.xml", "/files/report.pdf"):
            body_one = fetch(one.url + path)[2].replace(one.url.rsplit(":", 1)[1].encode(), b"PORT")
            body_two = fetch(two.url + path)[2].replace(two.url.rsplit(":", 1)[1].encode(), b"PORT")
            assert body_one == body_two, path


def test_cli_serves() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(
        [sys.executable, "-m", "statecrawl.demo.site", "--pages", "7", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = proc.stdout.readline()
            match = re.fullmatch(r"serving 7 pages at (http://127\.0\.0\.1:\d+)\n", line)
            assert match, line
            status, _, body = fetch(match.group(1) + "/")
            assert status == 200 and b"<title>Demo site</title>" in body
            proc.terminate()
            assert proc.wait(timeout=10) == 0
            assert proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()


def raw_exchange(site: DemoSite, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 2 s pass)."""
    with socket.create_connection(("127.0.0.1", urlsplit(site.url).port), timeout=2) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_http_edge_cases(site: DemoSite) -> None:
    http10 = raw_exchange(site, b"GET /robots.txt HTTP/1.0\r\n\r\n")
    assert http10.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in http10
    two = raw_exchange(site, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /robots.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2 and two.endswith(b"\r\n\r\n")  # HEAD: headers only
    body_then_get = raw_exchange(
        site, b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /page/1.html HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert body_then_get.startswith(b"HTTP/1.1 404") and b"<title>Page 1</title>" in body_then_get
    assert raw_exchange(site, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 501")
    # unusual request lines go to the stdlib parser (which answers them without a status line)
    assert b"505" in raw_exchange(site, b"GET / HTTP/2.0\r\n\r\n")
    assert b"400" in raw_exchange(site, b"NOT A REQUEST LINE\r\n\r\n")
