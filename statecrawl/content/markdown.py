"""Turn a crawled HTML page into GitHub-flavoured Markdown of its main content.

The pipeline is five small steps:

1. :func:`statecrawl.content.extract.parse_html` -- one lxml tree, never raises;
2. choose what to convert: the elements matching ``include_tags`` (CSS
   selectors) if given, minus those matching ``exclude_tags``; else the
   page's main content (:func:`statecrawl.content.maincontent.extract_main`: no
   navigation, sidebars, footers, comment threads, cookie banners); or,
   with ``only_main_content=False``, the whole ``<body>`` minus code,
   forms and navigation landmarks (:func:`strip_boilerplate`);
3. three tree rewrites make it Markdown for a reader or a language model,
   where the converter alone would not: code blocks get their language
   and lose their line-number gutters (:mod:`statecrawl.content._code`),
   links that go nowhere or show nothing go and images are kept by the
   ``images`` mode (:mod:`statecrawl.content._links`), data tables become
   full grids and layout tables text (:mod:`statecrawl.content._tables`);
4. html-to-markdown (Rust, a few ms per page) converts that, resolving
   every link and image against the page's base URL (``<base href>``
   joined to the page URL) so the Markdown works away from the page;
5. :func:`_tidy` fixes blank lines and trailing whitespace.

Links are resolved by the converter's ``base_url`` option, not by
rewriting ``href``/``src`` in the tree: the converter also takes image
addresses from ``srcset``, ``data-src``, ``data-lazy-src`` and
``data-original`` (lazy-loading pages), which a tree rewrite of
``href``/``src`` leaves relative, and its WHATWG resolver is ~10x faster
than ``urljoin`` per link. :func:`to_markdown` never raises: a page that
cannot be converted gives ``""`` and a warning in the log.

Text is not Markdown-escaped (``*``, ``_``, ``#`` are kept as written): the
output is read by people, search indexes and language models, for which
backslashes in every other word are noise.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Sequence
from urllib.parse import urljoin

import html_to_markdown
from cssselect import SelectorError
from lxml import etree
from lxml import html as lxml_html
from lxml.cssselect import CSSSelector

from statecrawl.content._code import prepare_code
from statecrawl.content._links import IMAGES, prepare_links
from statecrawl.content._tables import prepare_tables
from statecrawl.content.extract import parse_html
from statecrawl.content.maincontent import clean_tree, extract_main, flatten_deep

__all__ = ["BOILERPLATE_ROLES", "BOILERPLATE_TAGS", "IMAGES", "main_content_html",
           "strip_boilerplate", "to_markdown"]

logger = logging.getLogger(__name__)

#: Elements whose content is never page text: code, embeds, forms, and the
#: site-wide navigation and footer. ``aside`` is sidebars and pull-outs.
BOILERPLATE_TAGS: tuple[str, ...] = (
    "script", "style", "noscript", "template", "iframe", "svg",
    "nav", "footer", "form", "aside",
)  # fmt: skip

#: ARIA landmark roles of site chrome rather than page content.
BOILERPLATE_ROLES: tuple[str, ...] = ("navigation", "contentinfo", "banner")

#: Ancestors that make a ``<header>`` belong to a section rather than the page (HTML-AAM).
_SECTIONING: frozenset[str] = frozenset({"article", "aside", "main", "nav", "section"})

_ROLED = etree.XPath(".//*[@role]")
_PADDED_LINKS = etree.XPath(
    ".//*[(@href and normalize-space(@href) != @href) or (@src and normalize-space(@src) != @src)]"
)
_TITLED = etree.XPath(".//a[@title] | .//img[@title]")
_BASE_HREF = etree.XPath("(//base[@href])[1]/@href")  # searches the whole document

_OPTIONS = html_to_markdown.ConversionOptions(
    heading_style="atx",
    code_block_style="backticks",
    bullets="-",  # one bullet at every depth, not the default "-*+" cycle
    newline_style="backslash",  # "two trailing spaces" would not survive whitespace stripping
    compact_tables=True,  # padding every cell to its column's widest wastes bytes on wide tables
    inline_data_media="alt_text_only",  # no base64 payloads in the text
    extract_metadata=False,  # no YAML front matter; statecrawl.content.extract owns metadata
    preprocessing=html_to_markdown.PreprocessingOptions(enabled=False),  # our strip is the only one
)

_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")


def _is_banner(header: lxml_html.HtmlElement) -> bool:
    """A ``<header>`` outside sectioning content is the page's banner landmark.

    An ``<article>``'s own ``<header>`` holds its title and byline, and is kept.
    """
    return not any(ancestor.tag in _SECTIONING for ancestor in header.iterancestors())


def _boilerplate(root: lxml_html.HtmlElement) -> list[lxml_html.HtmlElement]:
    """The elements :func:`strip_boilerplate` drops, found by tag with ``iter``.

    ``iter(*tags)`` filters in C and is ~10x faster on a real page than one
    XPath testing ``self::tag`` for every element; only the (few) elements
    carrying a ``role`` need an attribute test.
    """
    found = list(root.iter(*BOILERPLATE_TAGS))
    found.extend(header for header in root.iter("header") if _is_banner(header))
    found.extend(
        element
        for element in _ROLED(root)
        if " ".join(element.get("role", "").lower().split()) in BOILERPLATE_ROLES
    )
    return found


def strip_boilerplate(root: lxml_html.HtmlElement) -> None:
    """Remove, in place, the descendants of ``root`` that are chrome rather than content.

    Removal keeps each element's tail text, so the words after a dropped
    ``<script>`` stay in their paragraph. ``root`` itself is never removed.
    """
    for element in _boilerplate(root):
        if element is not root and element.getparent() is not None:
            element.drop_tree()


def _document_base(root: lxml_html.HtmlElement, url: str) -> str:
    """The URL relative links resolve against: the first ``<base href>`` (joined to ``url``), else ``url``."""
    hrefs = _BASE_HREF(root)
    if hrefs:
        try:
            return urljoin(url, str(hrefs[0]).strip())
        except ValueError:  # e.g. a malformed IPv6 host in <base href>
            pass
    return url


def _trim_links(root: lxml_html.HtmlElement) -> None:
    """Strip the whitespace around ``href``/``src`` values, in place, as a browser ignores it.

    libxml2's HTML serializer URI-escapes these attributes, turning the
    trailing newline of a templated ``href="/path\\n"`` into ``/path%0A``
    before the converter can trim it.
    """
    for element in _PADDED_LINKS(root):
        for attribute in ("href", "src"):
            value = element.get(attribute)
            if value is not None and value != value.strip():
                element.set(attribute, value.strip())


def _tidy(markdown: str) -> str:
    """Strip trailing spaces and keep at most one blank line in a row, outside code fences.

    Fenced code is copied verbatim: blank lines and indentation are part of
    the code. A table is always followed, and a quote preceded, by a blank line.
    """
    lines: list[str] = []
    fence: str | None = None
    for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence is not None:
            lines.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        line = line.rstrip()
        if not line and (not lines or not lines[-1]):
            continue
        opening = _FENCE.match(line)
        if opening is not None:
            fence = opening.group(1)
        if line and lines and lines[-1].startswith("|") and not line.startswith("|"):
            lines.append("")  # the converter may start a list right under a table
        elif line.startswith(">") and lines and lines[-1] and not lines[-1].startswith(">"):
            lines.append("")  # ...and a quote right under a paragraph or heading
        lines.append(line)
    return "\n".join(lines).strip()


@functools.lru_cache(maxsize=256)
def _selector(css: str) -> CSSSelector | None:
    """The compiled selector, or ``None`` (warned once per process) if it is not valid CSS.

    Cached: a crawl passes the same few selectors for every page.
    """
    try:
        return CSSSelector(css, translator="html")
    except (SelectorError, TypeError, ValueError) as exc:
        logger.warning("Ignoring invalid CSS selector %r: %s", css, exc)
        return None


def _matches(root: lxml_html.HtmlElement, selectors: Sequence[str]) -> list[lxml_html.HtmlElement]:
    """The elements under ``root`` matching any selector, outermost only, in document order."""
    if isinstance(selectors, str):  # one selector passed bare
        selectors = [selectors]
    found: set[lxml_html.HtmlElement] = set()
    for css in selectors:
        selector = _selector(css) if isinstance(css, str) else None
        if selector is not None:
            found.update(el for el in selector(root) if isinstance(el, lxml_html.HtmlElement))
    return [el for el in root.iter() if el in found and not any(a in found for a in el.iterancestors())]


def _select(body: lxml_html.HtmlElement, include: Sequence[str]) -> lxml_html.HtmlElement:
    """A new ``<div>`` holding the elements matching ``include`` (moved out of ``body``)."""
    wrapper = lxml_html.Element("div")
    for el in _matches(body, include):
        el.tail = None
        wrapper.append(el)
    return wrapper


def _content(
    root: lxml_html.HtmlElement,
    only_main_content: bool,
    include_tags: Sequence[str] | None,
    exclude_tags: Sequence[str] | None,
) -> lxml_html.HtmlElement:
    """The element to convert, chosen as :func:`to_markdown` documents."""
    body = root.find("body")
    content = body if body is not None else root
    if include_tags:
        content = _select(content, include_tags)
    if exclude_tags:
        for el in _matches(content, exclude_tags):
            if el is not content and el.getparent() is not None:
                el.drop_tree()
    if include_tags:
        clean_tree(content)
    elif only_main_content:
        return extract_main(content)  # flattens too-deep nesting itself, knowing the depth
    else:
        strip_boilerplate(content)
    flatten_deep(content)
    return content


def _convert(
    html: str,
    url: str,
    only_main_content: bool,
    include_tags: Sequence[str] | None,
    exclude_tags: Sequence[str] | None,
    images: str,
) -> str:
    root = parse_html(html)
    if root is None:
        return ""
    base_url = _document_base(root, url)
    content = _content(root, only_main_content, include_tags, exclude_tags)
    for el in _TITLED(content):  # tooltips, mostly repeating the link text: noise in Markdown
        del el.attrib["title"]
    _trim_links(content)
    prepare_code(content)  # first: a gutter table is code, not a table
    prepare_links(content, images)  # before tables: a table of dropped images is empty
    prepare_tables(content)
    fragment = etree.tostring(content, encoding="unicode", method="html", with_tail=False)
    options = dataclasses.replace(_OPTIONS, base_url=base_url or None, skip_images=images == "none")
    result = html_to_markdown.convert(fragment, options)
    for warning in result.warnings:  # e.g. content deeper than the converter's depth limit
        logger.debug("html-to-markdown on %s: %s", url, warning.message)
    return _tidy(result.content or "")


def to_markdown(
    html: str,
    url: str,
    *,
    only_main_content: bool = True,
    include_tags: Sequence[str] | None = None,
    exclude_tags: Sequence[str] | None = None,
    images: str = "alt",
) -> str:
    """The page's main content as GitHub-flavoured Markdown, with absolute links.

    ATX headings, fenced code (with the language its markup names, without
    line numbers, verbatim), GFM tables (spans filled in, one header row;
    layout tables as text), ``-`` bullets, images as ``![alt](src)``;
    links and images resolved against ``<base href>`` and ``url``; no
    empty link (``[](url)``), no link to ``javascript:`` or ``#``; no run
    of blank lines, no trailing whitespace.

    - ``only_main_content`` (default): the article, product, listing or
      thread the page is about, without navigation, headers, footers,
      sidebars, comment threads, cookie banners or share bars (see
      :mod:`statecrawl.content.maincontent`). ``False``: the whole ``<body>`` minus
      scripts, forms and navigation landmarks.
    - ``include_tags``: CSS selectors; only the matching elements are
      converted, in document order (an element inside another match is
      not repeated). The selection replaces main-content detection.
    - ``exclude_tags``: CSS selectors; matching elements are removed
      (from the selection, if ``include_tags`` is given).
    - ``images``: ``"alt"`` (default) keeps the images that have alt
      text, ``"all"`` every image, ``"none"`` none; an image dropped
      from a link leaves its alt text as the link's label.

    An invalid selector is ignored with a warning in the log. Returns
    ``""`` for an empty or unparseable page, and never raises on a page;
    an ``images`` value not in :data:`IMAGES` is a ``ValueError``.
    """
    if images not in IMAGES:
        raise ValueError(f"images must be one of {', '.join(IMAGES)}, got {images!r}")
    try:
        return _convert(html, url, only_main_content, include_tags, exclude_tags, images)
    except Exception:  # one bad page must never stop a crawl
        logger.warning("Markdown conversion failed for %s", url, exc_info=True)
        return ""


def main_content_html(
    html: str,
    url: str,
    *,
    only_main_content: bool = True,
    include_tags: Sequence[str] | None = None,
    exclude_tags: Sequence[str] | None = None,
) -> str:
    """The same content :func:`to_markdown` converts, as cleaned HTML with absolute links.

    The ``html`` item format. Returns ``""`` for an empty or unparseable
    page, and never raises.
    """
    try:
        root = parse_html(html)
        if root is None:
            return ""
        base_url = _document_base(root, url)
        content = _content(root, only_main_content, include_tags, exclude_tags)
        _trim_links(content)
        if base_url:
            content.make_links_absolute(base_url, resolve_base_href=False,
                                        handle_failures="ignore")
        return etree.tostring(content, encoding="unicode", method="html", with_tail=False)
    except Exception:  # one bad page must never stop a crawl
        logger.warning("HTML cleaning failed for %s", url, exc_info=True)
        return ""
