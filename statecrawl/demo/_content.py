"""The demo site's resources: every page, rendered deterministically from (pages, base URL).

Separate from the server (:mod:`statecrawl.demo.site`) so the content contract
and the serving machinery can be read apart. See that module's docstring for
the layout.
"""

from __future__ import annotations

import html
import struct
import zlib
from functools import lru_cache
from urllib.parse import urlsplit

__all__ = ["HTML", "Resources", "render", "simple_page"]

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



HTML = _HTML
Resources = _Resources
render = _render
simple_page = _simple
