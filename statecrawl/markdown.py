"""Turn a crawled HTML page into GitHub-flavoured Markdown.

The pipeline is four small steps, each its own function so that the later
main-content extractor can replace :func:`strip_boilerplate` without
touching the rest:

1. :func:`statecrawl.extract.parse_html` -- one lxml tree, never raises;
2. :func:`strip_boilerplate` -- drop code, embeds, forms and the page's
   navigation landmarks (a deliberately simple rule set, see below);
3. html-to-markdown (Rust, a few ms per page) converts ``<body>``, resolving
   every link and image against the page's base URL (``<base href>``
   joined to the page URL) so the Markdown works away from the page;
4. :func:`_tidy` fixes blank lines and trailing whitespace.

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
import logging
import re
from urllib.parse import urljoin

import html_to_markdown
from lxml import etree
from lxml import html as lxml_html

from statecrawl.extract import parse_html

__all__ = ["BOILERPLATE_ROLES", "BOILERPLATE_TAGS", "strip_boilerplate", "to_markdown"]

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
_BASE_HREF = etree.XPath("(//base[@href])[1]/@href")  # searches the whole document

_OPTIONS = html_to_markdown.ConversionOptions(
    heading_style="atx",
    code_block_style="backticks",
    bullets="-",  # one bullet at every depth, not the default "-*+" cycle
    newline_style="backslash",  # "two trailing spaces" would not survive whitespace stripping
    compact_tables=True,  # padding every cell to its column's widest wastes bytes on wide tables
    inline_data_media="alt_text_only",  # no base64 payloads in the text
    extract_metadata=False,  # no YAML front matter; statecrawl.extract owns metadata
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
    the code.
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
        lines.append(line)
    return "\n".join(lines).strip()


def _convert(html: str, url: str) -> str:
    root = parse_html(html)
    if root is None:
        return ""
    body = root.find("body")
    content = body if body is not None else root
    strip_boilerplate(content)
    _trim_links(content)
    fragment = etree.tostring(content, encoding="unicode", method="html")
    options = dataclasses.replace(_OPTIONS, base_url=_document_base(root, url) or None)
    result = html_to_markdown.convert(fragment, options)
    for warning in result.warnings:  # e.g. content deeper than the converter's depth limit
        logger.debug("html-to-markdown on %s: %s", url, warning.message)
    return _tidy(result.content or "")


def to_markdown(html: str, url: str) -> str:
    """The page's ``<body>`` as GitHub-flavoured Markdown, with absolute links.

    ATX headings, fenced code, GFM tables, ``-`` bullets; no run of blank
    lines, no trailing whitespace. Returns ``""`` for an empty or
    unparseable page and never raises.
    """
    try:
        return _convert(html, url)
    except Exception:  # one bad page must never stop a crawl
        logger.warning("Markdown conversion failed for %s", url, exc_info=True)
        return ""
