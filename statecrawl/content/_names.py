"""What an element's tag, role, class and id say it is: chrome, comments, a caption.

Class and id values are read as words, split at ``-``, ``_``, spaces and
camelCase (``site-header`` is ``site`` + ``header``), so that a word list
matches ``site-header`` but not ``elementor-widget`` or
``bricks-lazy-hidden``. The word lists were tuned on the scrapinghub
article benchmark and the WCXB dev set (``bench/markdown.py``).
"""

from __future__ import annotations

import functools
import re

from lxml import html as lxml_html

__all__ = ["CHROME_ROLES", "CHROME_WORDS", "WORD_SPLIT", "chrome_names", "chrome_words", "is_caption", "is_comments", "is_landmark",
           "is_strong_chrome", "name_flags", "name_words", "value_words"]

WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])")

#: ARIA roles of site chrome.
CHROME_ROLES: frozenset[str] = frozenset({
    "navigation", "contentinfo", "banner", "complementary", "search", "menu", "menubar", "toolbar",
})  # fmt: skip
#: Landmarks by tag: what the broad selection leaves out.
_LANDMARK_TAGS: frozenset[str] = frozenset({"nav", "aside", "footer", "header"})
#: Class/id words of site chrome.
CHROME_WORDS: frozenset[str] = frozenset({
    "nav", "navbar", "navigation", "menu", "menus", "submenu", "megamenu", "breadcrumb",
    "breadcrumbs", "crumbs", "pagination", "pager", "footer", "masthead", "topbar", "sidebar",
    "cookie", "cookies", "consent", "gdpr", "onetrust", "share", "sharing", "social", "socials",
    "related", "recommended", "recommendations", "newsletter", "subscribe", "subscription",
    "signup", "promo", "advert", "advertisement", "sponsored", "ad", "ads", "comment",
    "comments", "disqus", "modal", "popup", "overlay", "skip", "toolbar", "search", "login",
    "cart", "byline", "banner", "copyright", "dropdown", "offcanvas", "drawer", "sr", "tags",
    "header",
})  # fmt: skip
#: Words that make an element content even with a chrome word (``post-header``,
#: ``search-results``: the results of a search page are its content).
_CONTENT_WORDS: frozenset[str] = frozenset({
    "article", "content", "post", "entry", "main", "body", "text", "story", "blog", "product",
    "description", "recipe", "prose", "result", "results",
})  # fmt: skip
#: Chrome words sure enough to drop spared chrome outside the core.
_STRONG_CHROME_WORDS: frozenset[str] = frozenset({
    "comment", "comments", "disqus", "respond", "related", "recommended", "recommendations",
    "footer", "sidebar", "newsletter", "share", "social", "cookie", "consent", "breadcrumb",
    "breadcrumbs", "nav", "navbar", "menu", "pagination",
})  # fmt: skip
#: Words of layout wrappers (``sidebar-layout``, ``has-sidebar``): never sure chrome.
_LAYOUT_WORDS: frozenset[str] = frozenset({
    "layout", "wrapper", "wrap", "container", "main", "page", "site", "body", "content", "has",
})  # fmt: skip
#: Words of a comment thread: a long comment can outscore a short article.
_COMMENT_WORDS: frozenset[str] = frozenset({"comment", "comments", "disqus", "respond"})
#: Words of what sits in an article beside its text -- captions, photo
#: credits, galleries (their captions repeat, slide by slide), bylines.
_CAPTION_WORDS: frozenset[str] = frozenset({
    "caption", "credit", "credits", "gallery", "slideshow", "byline", "author", "timestamp", "dateline",
})  # fmt: skip


@functools.lru_cache(maxsize=4096)
def value_words(value: str) -> frozenset[str]:
    """The lower-cased words of one class or id value (``product-reviews`` -> product, reviews), cached."""
    return frozenset(w.lower() for w in WORD_SPLIT.split(value) if w)


def name_words(el: lxml_html.HtmlElement) -> frozenset[str]:
    """The lower-cased words of the element's class and id."""
    return value_words(el.get("class", "")) | value_words(el.get("id", ""))


def name_flags(value: str) -> tuple[bool, bool]:
    """(has a chrome word, has a content word) for one class or id value."""
    words = value_words(value)
    return not CHROME_WORDS.isdisjoint(words), not _CONTENT_WORDS.isdisjoint(words)


def chrome_names(el: lxml_html.HtmlElement) -> frozenset[str]:
    """The chrome words among the element's class and id words."""
    return name_words(el) & CHROME_WORDS


def chrome_words(el: lxml_html.HtmlElement) -> bool:
    """Whether the class or id names the element chrome (``site-menu``, not ``post-header``)."""
    chrome, content = name_flags(f"{el.get('class', '')} {el.get('id', '')}")
    return chrome and not content


def is_strong_chrome(el: lxml_html.HtmlElement) -> bool:
    """``aside``, ``footer``, ``nav``, or named comments, sidebar, share bar... (not a layout wrapper)."""
    if el.tag in ("aside", "footer", "nav"):
        return True
    words = name_words(el)
    return not _STRONG_CHROME_WORDS.isdisjoint(words) and _LAYOUT_WORDS.isdisjoint(words)


def is_comments(el: lxml_html.HtmlElement) -> bool:
    """Named a comment thread (``id="comments"``, ``class="comment first"``)."""
    return not _COMMENT_WORDS.isdisjoint(name_words(el))


def is_caption(el: lxml_html.HtmlElement) -> bool:
    """Named a caption, a photo credit, a gallery or a byline."""
    if not (el.get("class") or el.get("id")):
        return False
    return not _CAPTION_WORDS.isdisjoint(name_words(el))


def is_landmark(el: lxml_html.HtmlElement) -> bool:
    """A chrome landmark by tag or role (``nav``, ``aside``, ``footer``, ``header``, navigation roles)."""
    role = " ".join((el.get("role") or "").lower().split())
    return el.tag in _LANDMARK_TAGS or role in CHROME_ROLES
