"""``scrapy crawl site -a url=URL``: every page of one site as Markdown + JSON.

The spider of ``statecrawl crawl`` (its workers load it through
:mod:`statecrawl.cli.worker_settings`) and of the repository's Scrapy project
(``spiders/site.py`` is this class). ``limit`` counts pages: robots.txt and
sitemap requests (``meta["statecrawl_aux"]``) and retries do not count.

Arguments (all ``-a name=value``): ``url`` (required), ``crawl_id``,
``limit`` (max pages admitted to the crawl, crawl-wide), ``max_depth``,
``include`` / ``exclude`` (regexes on the URLs to follow), ``allow_subdomains``
(``true``/``false``), ``render`` (``http``, ``browser`` or ``auto``; see
:mod:`statecrawl.render.middleware`) and the page controls of rendered pages:
``settle_ms`` (the most a page waits to settle, 0: not at all), ``quiet_ms``
(see :mod:`statecrawl.render.settle`), ``wait_for`` (CSS selector),
``wait_ms``, ``wait_until`` (``load``, ``domcontentloaded``,
``networkidle``, ``commit``), ``delay`` (seconds between two requests of a
host, for all the crawl's workers) and ``host_concurrency`` (requests of a host
in flight at once, all workers), ``screenshot``
(``true``/``false``), ``formats`` (comma-separated: ``markdown`` (the
default), ``html`` (cleaned main-content HTML), ``raw_html``, ``links``).
Start several processes with the same ``crawl_id`` and Redis and they share
the crawl.

Sessions (:mod:`statecrawl.sessions.login`, :mod:`statecrawl.sessions.passthrough`):
``login_url`` + ``login_form`` (a JSON object of the form fields to fill in)
log the crawl in once, shared by every worker; ``cookies`` / ``headers``
(JSON objects) are sent with every request and never stored.

Setting ``STATECRAWL_MARKDOWN_IMAGES`` (str, default ``"alt"``): which
images the ``markdown`` format keeps. ``alt``: those with alt text (what a
reader or a language model gets from an image); ``all``: every image
(decorative ``alt=""`` images and tracking pixels still go); ``none``: no
image (an image that is a link's only content leaves its alt text as the
link's label). Any other value is a ``ConfigError`` when the spider starts.
Example: ``-s STATECRAWL_MARKDOWN_IMAGES=all``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.link import Link
from scrapy.linkextractors import IGNORED_EXTENSIONS, LinkExtractor
from scrapy.settings import BaseSettings
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from twisted.python.failure import Failure
from w3lib.encoding import http_content_type_encoding

from statecrawl.content.extract import page_metadata
from statecrawl.content.markdown import IMAGES, main_content_html, to_markdown
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.scope import Scope, validate_start_url
from statecrawl.output.items import Page
from statecrawl.render.middleware import (
    RENDER_META_KEY,
    RENDER_MODES,
    RENDER_OPTIONS_META_KEY,
    RENDERER_META_KEY,
    WAIT_UNTIL,
)
from statecrawl.sessions.login import pop_session_args
from statecrawl.spiders._args import bool_arg, formats_arg, int_arg, seconds_arg

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_REDIRECTS = [301, 302, 303, 307, 308]
# Follow links to documents and images too (each gets an item noting its
# content type); archives, audio, video and executables stay skipped.
_FOLLOWED_BINARY = {"pdf", "png", "jpg", "jpeg", "gif", "webp", "svg", "doc", "docx", "xls", "xlsx", "ppt", "pptx"}

# A body served as HTML may be a file (a PDF behind a download URL, an image,
# an archive): told apart by its first bytes, as browsers sniff (WHATWG MIME
# Sniffing), so it never becomes Markdown mojibake or a source of links.
_SNIFF_BYTES = 4096
#: (offset, bytes) that must all match, and the type the item then says.
_MAGIC: tuple[tuple[tuple[tuple[int, bytes], ...], str], ...] = (
    (((0, b"%PDF-"),), "application/pdf"),
    (((0, b"\x89PNG\r\n\x1a\n"),), "image/png"),
    (((0, b"GIF87a"),), "image/gif"),
    (((0, b"GIF89a"),), "image/gif"),
    (((0, b"\xff\xd8\xff"),), "image/jpeg"),
    (((0, b"RIFF"), (8, b"WEBP")), "image/webp"),
    (((0, b"PK\x03\x04"),), "application/zip"),  # also docx, xlsx, pptx, odt, epub
    (((0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),), "application/x-ole-storage"),  # doc, xls
    (((0, b"\x1f\x8b"),), "application/gzip"),
    (((0, b"BZh"), (4, b"1AY&SY")), "application/x-bzip2"),
    (((0, b"\xfd7zXZ\x00"),), "application/x-xz"),
    (((0, b"7z\xbc\xaf\x27\x1c"),), "application/x-7z-compressed"),
    (((0, b"Rar!\x1a\x07"),), "application/vnd.rar"),
    (((0, b"\x28\xb5\x2f\xfd"),), "application/zstd"),
    (((0, b"\x00\x00\x00"), (4, b"ftyp")), "video/mp4"),
)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
#: WHATWG's "binary data bytes": control bytes that text does not contain.
_CONTROL = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
_CONTROL_SHARE = 0.05  # more than this share of control bytes: binary
_BINARY = "binary"  # _sniff's answer for a binary body of no known type


def _sniff(body: bytes, content_type_header: str) -> str | None:
    """The type of a body served as HTML that is not text: a known type, ``_BINARY``, or None."""
    head = body[:_SNIFF_BYTES]
    for parts, mime in _MAGIC:
        if all(head[at:at + len(magic)] == magic for at, magic in parts):
            return mime
    if not head or head.startswith(_BOMS):
        return None  # UTF-16 and UTF-32 text has NUL bytes; its BOM says it is text
    encoding = http_content_type_encoding(content_type_header) or ""
    if encoding.startswith(("utf-16", "utf-32")):
        return None
    control = len(head) - len(head.translate(None, _CONTROL))
    if b"\x00" in head or control > _CONTROL_SHARE * len(head):
        return _BINARY
    return None


def markdown_images(settings: BaseSettings) -> str:
    """``STATECRAWL_MARKDOWN_IMAGES`` (default ``alt``); another value is a :class:`ConfigError`."""
    images = str(settings.get("STATECRAWL_MARKDOWN_IMAGES") or IMAGES[0]).strip().lower()
    if images not in IMAGES:
        raise ConfigError(f"STATECRAWL_MARKDOWN_IMAGES must be one of {', '.join(IMAGES)}, "
                          f"got {images!r}")
    return images


def response_fields(page: Page, response: Response) -> None:
    """Set what the response says of itself on *page*: final URL, status, type, renderer."""
    content_type = response.headers.get("Content-Type", b"").decode("latin-1").split(";")[0]
    page.final_url, page.status = response.url, response.status
    page.content_type = content_type.strip().lower() or None
    page.renderer = response.meta.get(RENDERER_META_KEY, "http")
    page.screenshot = response.meta.get("statecrawl_screenshot")


def fill_page(
    page: Page, response: Response, *, formats: Collection[str], images: str,
    link_extractor: LinkExtractor, only_main_content: bool = True,
    include_tags: Sequence[str] | None = None, exclude_tags: Sequence[str] | None = None,
    extract_links: bool = True,
) -> list[Link]:
    """Fill *page* (after :func:`response_fields`) from an HTML response: metadata, the
    requested *formats*, links (unless *extract_links* is false); returns the links (none for
    a page that is not HTML text).

    The one place a response becomes page content: the ``site`` and ``scrape``
    spiders both use it. A body served as HTML that is a file gets no content
    (its type, or a ``BinaryContent`` error, says why).
    """
    content_type = page.content_type or ""
    if not isinstance(response, TextResponse) or content_type not in _HTML_TYPES:
        return []  # not HTML: no Markdown, the content type says why
    sniffed = _sniff(response.body, response.headers.get("Content-Type", b"").decode("latin-1"))
    if sniffed is not None:  # served as HTML, but a file: no Markdown, no links
        if sniffed == _BINARY:
            page.error = {"type": "BinaryContent",
                          "message": f"{response.url} is served as {content_type} "
                                     "but the body is binary"}
        else:
            page.content_type = sniffed
        return []
    html = response.text
    meta = page_metadata(html, response.url)
    page.title, page.description, page.language = meta["title"], meta["description"], meta["language"]
    page.canonical, page.open_graph, page.twitter = (
        meta["canonical"], meta["open_graph"], meta["twitter"])
    page.published, page.author = meta["published"], meta["author"]
    if "markdown" in formats:
        page.markdown = to_markdown(html, response.url, images=images,
                                    only_main_content=only_main_content,
                                    include_tags=include_tags, exclude_tags=exclude_tags)
    if "html" in formats:
        page.html = main_content_html(html, response.url, only_main_content=only_main_content,
                                      include_tags=include_tags, exclude_tags=exclude_tags)
    if "raw_html" in formats:
        page.raw_html = html
    if not extract_links:  # (a scrape that did not ask for links: ~1 ms a page saved)
        return []
    links = link_extractor.extract_links(response)
    page.links = [{"url": link.url, "text": " ".join(link.text.split())} for link in links]
    return links


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SiteSpider(Spider):
    name = "site"

    def __init__(
        self, url: str | None = None, crawl_id: str | None = None, limit: Any = None,
        max_depth: Any = None, include: str | None = None, exclude: str | None = None,
        allow_subdomains: Any = None, render: str | None = None, wait_for: str | None = None,
        wait_ms: Any = None, wait_until: str | None = None, screenshot: Any = None,
        settle_ms: Any = None, quiet_ms: Any = None, formats: str | None = None,
        delay: Any = None, host_concurrency: Any = None, **kwargs: Any,
    ) -> None:
        session_args = pop_session_args(kwargs)  # login_form, cookies, headers: never stored
        super().__init__(**kwargs)
        for name, value in session_args.items():
            setattr(self, name, value)
        if render is not None and render not in RENDER_MODES:
            raise ConfigError(f"-a render= must be one of {', '.join(RENDER_MODES)}, got {render!r}")
        if wait_until is not None and wait_until not in WAIT_UNTIL:
            raise ConfigError(f"-a wait_until= must be one of {', '.join(WAIT_UNTIL)}, "
                              f"got {wait_until!r}")
        self.render = render
        self.markdown_images = IMAGES[0]  # STATECRAWL_MARKDOWN_IMAGES, read by from_crawler
        self.formats = formats_arg(formats)
        #: fill_page's content options (only_main_content, include_tags, exclude_tags)
        self.page_options: dict[str, Any] = {}
        self.render_options = {k: v for k, v in {
            "wait_for": wait_for, "wait_ms": int_arg("wait_ms", wait_ms), "wait_until": wait_until,
            "screenshot": bool_arg("screenshot", screenshot) or None,
            "settle_ms": int_arg("settle_ms", settle_ms), "quiet_ms": int_arg("quiet_ms", quiet_ms),
        }.items() if v is not None}
        self.start_url = validate_start_url(url)
        self.crawl_id = crawl_id or self.name
        # the crawl's politeness budget, for all its workers (statecrawl.frontier.hosts); kept
        # in Redis with the crawl, not in crawl_args: `statecrawl hosts` changes it
        self.host_budget = {k: v for k, v in (
            ("delay", seconds_arg("delay", delay)),
            ("concurrency", int_arg("host_concurrency", host_concurrency))) if v}
        self.crawl_limit = int_arg("limit", limit)
        self.max_depth = int_arg("max_depth", max_depth)
        self.scope = Scope(
            self.start_url, allow_subdomains=bool_arg("allow_subdomains", allow_subdomains),
            include=include, exclude=exclude,
        )
        # Off-site redirects are dropped by Scrapy's OffsiteMiddleware.
        self.allowed_domains = [self.scope.host]
        self.crawl_args = {
            k: v for k, v in {
                "url": self.start_url, "limit": self.crawl_limit, "max_depth": self.max_depth,
                "include": include, "exclude": exclude,
                "allow_subdomains": self.scope.allow_subdomains, "render": render,
                "formats": formats,
                **self.render_options,
            }.items() if v is not None
        }
        self.link_extractor = LinkExtractor(
            unique=True, deny_extensions=[e for e in IGNORED_EXTENSIONS if e not in _FOLLOWED_BINARY])
        if self.login_url:  # only this: the form holds a password, pass-through is never kept
            self.crawl_args["login_url"] = self.login_url

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> SiteSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.markdown_images = markdown_images(crawler.settings)
        return spider

    async def start(self) -> AsyncIterator[Request]:
        yield self._follow(self.start_url)
        robots = self.start_url.split("/", 3)[:3]
        # depth -1: robots.txt and sitemaps are not hops, so a sitemap's pages
        # are at depth 1, like the start page's links.
        yield Request("/".join(robots) + "/robots.txt", callback=self.parse_robots,
                      errback=self.on_aux_error, meta={"statecrawl_aux": True, "depth": -1})

    # -- pages -------------------------------------------------------------------

    def _page(self, url: str, **fields: Any) -> Page:
        return Page(url=url, crawl_id=self.crawl_id, fetched_at=_now(), **fields)

    def _may_expand(self, depth: int) -> bool:
        """May a page at *depth* add requests (links, a redirect target)?"""
        return self.max_depth is None or depth < self.max_depth

    def _follow(self, url: str) -> Request:
        # Redirects are taken here, not by Scrapy's RedirectMiddleware, so a
        # redirecting URL gets its own item and an off-site target is named.
        meta: dict[str, Any] = {"dont_redirect": True, "handle_httpstatus_list": _REDIRECTS}
        if self.render is not None:
            meta[RENDER_META_KEY] = self.render
        if self.render_options:
            meta[RENDER_OPTIONS_META_KEY] = self.render_options
        return Request(url, callback=self.parse, errback=self.on_error, meta=meta)

    def parse(self, response: Response) -> Iterator[Page | Request]:
        depth = int(response.meta.get("depth", 0))
        # the URL asked for: a rendered page may have navigated elsewhere by itself
        origin = (response.meta.get("redirect_urls") or [response.request.url])[0]
        page = self._page(origin, depth=depth)
        response_fields(page, response)
        if response.status in _REDIRECTS:
            yield from self._redirect(page, response)
            return
        links = fill_page(page, response, formats=self.formats, images=self.markdown_images,
                          link_extractor=self.link_extractor, **self.page_options)
        yield page
        if not self._may_expand(depth):
            return
        for link in links:
            if self.scope.allows(link.url):
                yield self._follow(link.url)

    def _redirect(self, page: Page, response: Response) -> Iterator[Page | Request]:
        location = response.headers.get("Location", b"").decode("latin-1")
        if not location:
            page.error = {"type": "BadRedirect", "message": f"HTTP {response.status} without Location"}
            yield page
            return
        target = response.urljoin(location)
        page.final_url = target
        if not self.scope.allows(target):
            page.error = {"type": "OutOfScopeRedirect",
                          "message": f"redirects to {target}, outside the crawl scope"}
            yield page
            return
        yield page
        if self._may_expand(page.depth):
            yield self._follow(target)

    def on_error(self, failure: Failure) -> Iterator[Page]:
        request = failure.request  # type: ignore[attr-defined]
        origin = (request.meta.get("redirect_urls") or [request.url])[0]
        depth = int(request.meta.get("depth", 0))
        renderer = request.meta.get(RENDERER_META_KEY, "http")
        if failure.check(HttpError):
            response = failure.value.response
            content_type = response.headers.get("Content-Type", b"").decode("latin-1").split(";")[0]
            yield self._page(origin, final_url=response.url, status=response.status, depth=depth,
                             renderer=renderer, content_type=content_type.strip().lower() or None,
                             error={"type": "HttpError", "message": f"HTTP {response.status}"})
        elif failure.check(IgnoreRequest):
            pass  # refused by robots.txt or a filter: not a page of the crawl
        else:
            yield self._page(origin, depth=depth, renderer=renderer, error={
                "type": type(failure.value).__name__, "message": str(failure.value) or repr(failure.value)})

    # -- robots.txt and sitemaps ---------------------------------------------------

    def parse_robots(self, response: Response) -> Iterator[Request]:
        for url in sitemap_urls_from_robots(response.body, base_url=response.url):
            yield Request(url, callback=self.parse_sitemap, errback=self.on_aux_error,
                          meta={"statecrawl_aux": True})

    def parse_sitemap(self, response: Response) -> Iterator[Request]:
        try:
            sitemap = Sitemap(response.body)
        except Exception as exc:  # lxml refuses some bodies outright
            self.logger.warning("unreadable sitemap %s: %s", response.url, exc)
            return
        for entry in sitemap:
            loc = entry.get("loc", "")
            if sitemap.type == "sitemapindex":
                yield Request(loc, callback=self.parse_sitemap, errback=self.on_aux_error,
                              meta={"statecrawl_aux": True})
            elif self.scope.allows(loc) and (self.max_depth is None or self.max_depth >= 1):
                yield self._follow(loc)

    def on_aux_error(self, failure: Failure) -> None:
        self.logger.debug("robots.txt/sitemap fetch failed: %s", failure.value)
