"""Find the main content of a parsed page: the step between parsing and Markdown.

:func:`extract_main` takes a page's ``<body>`` and returns the element
holding its main content, with the boilerplate inside removed. It needs
one walk over the tree (:func:`statecrawl.content._pagetext.walk`) and no per-site
rules:

1. :func:`clean_tree` drops what is never text: scripts, embeds, form
   controls, decorative images; the walk skips hidden elements.
2. Chrome is stripped -- ``nav``, ``aside``, ``footer``, the banner
   ``header``, navigation roles, class/id words such as menu, cookie,
   share, comments -- unless it holds a large share of the page's
   paragraph text: a ``<div class="has-sidebar">`` wrapping the page must
   survive. Spared chrome gets a second look once the core is known.
3. The *core* is Readability's top candidate: paragraphs score their
   nearest ancestors, and the best score scaled by ``1 - link density``
   wins, so concentrated prose beats a wrapper that merely holds more text
   (related-story teasers, comment threads).
4. The core grows to what the page shows as content. A page without real
   prose (a shop grid, a listing, a landing page) gets its ``<main>`` or
   whole cleaned body. Otherwise the core climbs through its ancestors
   until it holds most of the page's paragraph text, taking the siblings
   that are not link lists: service pages spread over many ``<section>``
   and forum threads of sibling posts come out whole.
5. Inside a prose container, link-dense blocks with little punctuation
   (share bars, tag lists, "more stories") and figure captions go.

The thresholds were tuned on the scrapinghub article benchmark and the
WCXB dev set (``bench/markdown.py``); each is named below with its role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree
from lxml import html as lxml_html

from statecrawl.content._pagetext import WORD_SPLIT, Block, Chrome, is_hidden, walk

__all__ = ["MAX_DEPTH", "clean_tree", "extract_main", "flatten_deep"]

#: Elements whose content is code or media, never page text.
_CODE_TAGS: tuple[str, ...] = (
    "script", "style", "template", "iframe", "svg", "object", "embed", "canvas",
    "audio", "video", "source", "track", "link", "meta", "map",
)  # fmt: skip
#: Form controls. libxml2 sometimes nests a whole broken page in a ``<button>``,
#: so a control holding much text is unwrapped rather than dropped.
_CONTROL_TAGS: tuple[str, ...] = (
    "button", "select", "textarea", "input", "label", "option", "datalist", "output",
)  # fmt: skip
_CONTROL_MAX_TEXT = 200
_NOSCRIPT_MIN = 500  # a <noscript> with this much markup is the page itself (Discourse)

#: Readability's priors for an element becoming the core, by tag and class/id.
_TAG_PRIOR: dict[str, int] = {
    "div": 5, "pre": 3, "td": 3, "blockquote": 3,
    "address": -3, "ol": -3, "ul": -3, "dl": -3, "dd": -3, "dt": -3, "li": -3, "form": -3,
    "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5, "h6": -5, "th": -5,
}  # fmt: skip
_CLASS_PRIOR = 25
_POSITIVE_RE = re.compile(r"article|body|content|entry|hentry|main|page|post|text|blog|story", re.IGNORECASE)
_NEGATIVE_RE = re.compile(
    r"combx|comment|com-|contact|foot|footer|footnote|masthead|media|meta|outbrain|promo"
    r"|related|scroll|shoutbox|sidebar|sponsor|shopping|tags|tool|widget",
    re.IGNORECASE,
)

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

#: html-to-markdown skips whatever lies deeper than 1,024 elements; deeper
#: nesting (tables in tables, broken pages) is unwrapped to this depth, below
#: its 512-level limit for repairing broken markup.
MAX_DEPTH = 500
_DEPTH = "count(ancestor::*)"
_IS_TOO_DEEP = etree.XPath(f"boolean(descendant::*[{_DEPTH} > {MAX_DEPTH}])")
_TOO_DEEP = etree.XPath(f"descendant::*[{_DEPTH} > {MAX_DEPTH}]")
#: Table parts just above the cut: rows whose cells were unwrapped would hold bare text.
_CUT_TABLE_PARTS = etree.XPath(
    f"descendant::*[{_DEPTH} > {MAX_DEPTH - 4} and {_DEPTH} <= {MAX_DEPTH}]"
    "[self::table or self::thead or self::tbody or self::tfoot or self::tr or self::td or self::th]"
)

_KEEP_SHARE = 0.3  # chrome holding more of the page's paragraph text is spared...
_KEEP_MIN = 200  # ...if that is at least this many chars
_SPARED_REST = 500  # chars of prose a core must have besides spared chrome inside it
_WEAK_CORE = 300  # chars of prose below which a core is no article (grid, listing)
_MAIN_SHARE = 0.3  # <main> stands for such a page if it holds this share of its text
_COVERAGE = 0.6  # an article's core grows until it holds this share of the paragraph text
_SIBLING_MAX_LINKS = 0.5  # denser siblings are link lists, left out while growing
_PROSE_CONTAINER = 0.4  # share of prose that makes a container an article (pruned)
_PRUNE_MAX_LINKS = 0.33  # inside it, blocks with more links...
_PRUNE_MAX_COMMAS = 10  # ...and fewer commas than this...
_PRUNE_KEEP_SHARE = 0.2  # ...that hold less than this share of its prose, go
_PRUNED_TAGS: frozenset[str] = frozenset({
    "div", "section", "ul", "ol", "table", "dl", "header", "footer", "nav", "figure", "aside",
})  # fmt: skip


def _drop(elements: Iterable[lxml_html.HtmlElement]) -> None:
    """Remove elements and their subtrees, keeping their tail text."""
    for el in elements:
        if el.getparent() is not None:
            el.drop_tree()


def _is_decorative(img: lxml_html.HtmlElement) -> bool:
    """``alt=""`` marks an image decorative (HTML spec); a 1x1 image is a tracking pixel."""
    alt = img.get("alt")
    if alt is not None and not alt.strip():
        return True
    return img.get("width") in ("0", "1") and img.get("height") in ("0", "1")


def clean_tree(root: lxml_html.HtmlElement, *, hidden: bool = True) -> None:
    """Remove, in place, what is never text: code, media, form controls, hidden parts.

    A ``<noscript>`` holding the markup of a page's text (Discourse serves
    its posts so) is unwrapped; other ``<noscript>`` (tracking pixels,
    "enable JavaScript") is dropped. Hidden elements go unless they hold
    half the page (a page saved with a modal open); :func:`extract_main`
    passes ``hidden=False`` because its walk does that test anyway.
    """
    for el in list(root.iter("noscript")):
        if len(el) and len(el.text_content()) >= _NOSCRIPT_MIN:
            el.drop_tag()
        elif el.getparent() is not None:
            el.drop_tree()
    etree.strip_elements(root, *_CODE_TAGS, with_tail=False)  # in C; the tail text stays
    for el in list(root.iter(*_CONTROL_TAGS)):
        if el.getparent() is None:
            continue
        if len(el.text_content()) < _CONTROL_MAX_TEXT:
            el.drop_tree()
        else:
            el.drop_tag()
    _drop([img for img in root.iter("img") if _is_decorative(img)])
    if hidden:
        found = [el for el in root.iterdescendants() if isinstance(el.tag, str) and is_hidden(el)]
        if found:
            half = len(root.text_content()) / 2
            _drop([el for el in found if len(el.text_content()) < half])


def flatten_deep(root: lxml_html.HtmlElement) -> None:
    """Unwrap, in place, the elements nested deeper than ``MAX_DEPTH``; their text stays.

    Table parts just above the cut become ``<div>`` s, so that the unwrapped
    text is not left bare inside a ``<tr>`` (where a converter drops it).
    The test costs ~0.5 ms on a typical page; :func:`extract_main` only
    calls this when its walk met deep nesting.
    """
    if not _IS_TOO_DEEP(root):
        return
    for el in _CUT_TABLE_PARTS(root):
        el.tag = "div"
    for el in _TOO_DEEP(root):
        el.drop_tag()


def _strip_chrome(blocks: list[Block], chrome: Chrome) -> list[Block]:
    """Drop hidden elements and the chrome holding little paragraph text; return the spared.

    Outer chrome is judged first (the list is in post-order), with the
    counts it had before anything inside it went.
    """
    _drop(chrome.hidden)
    limit = _KEEP_SHARE * blocks[-1].good
    spared = []
    for block in reversed(chrome.blocks):
        if block.removed:
            continue
        if block.good <= limit or block.good < _KEEP_MIN:
            block.remove(blocks)
        else:
            spared.append(block)
    return spared


def _candidate_score(block: Block) -> float:
    el = block.el
    prior = _TAG_PRIOR.get(el.tag, 0)
    for value in (el.get("class"), el.get("id")):
        if value:
            prior += _CLASS_PRIOR * (_POSITIVE_RE.search(value) is not None)
            prior -= _CLASS_PRIOR * (_NEGATIVE_RE.search(value) is not None)
    return (block.score + prior) * (1 - block.link_density())


def _find_core(blocks: list[Block]) -> Block | None:
    """Readability's top candidate, moved up where its ancestors score alike."""
    ranked = sorted(
        ((_candidate_score(b), b) for b in blocks if b.score > 0 and not b.removed), key=lambda p: -p[0]
    )
    if not ranked:
        return None
    best, top = ranked[0]
    # Several near-equal candidates in one container (sections, posts): take the container.
    rivals = [block for score, block in ranked[1:5] if score >= 0.75 * best]
    if len(rivals) >= 3:
        ancestor = top.parent
        while ancestor is not None:
            if sum(ancestor.contains(block) for block in rivals) >= 3:
                top = ancestor
                break
            ancestor = ancestor.parent
    last = _candidate_score(top)
    floor = last / 3
    ancestor = top.parent
    while ancestor is not None and ancestor.el.tag != "body":
        score = _candidate_score(ancestor) if ancestor.score > 0 else 0.0
        if score > 0:
            if score < floor:
                break
            if score > last:
                top = ancestor
                break
            last = score
        ancestor = ancestor.parent
    while top.parent is not None and top.parent.el.tag != "body" and len(top.parent.el) == 1:
        top = top.parent
    return top


def _is_strong_chrome(el: lxml_html.HtmlElement) -> bool:
    if el.tag in ("aside", "footer", "nav"):
        return True
    words = {w.lower() for w in WORD_SPLIT.split(f"{el.get('class', '')} {el.get('id', '')}") if w}
    return not _STRONG_CHROME_WORDS.isdisjoint(words) and _LAYOUT_WORDS.isdisjoint(words)


def _second_look(core: Block, spared: list[Block], blocks: list[Block]) -> None:
    """Drop the spared chrome now known not to be the content.

    Comments or related stories may hold more paragraph text than a short
    article, so the first pass spared them. They go now unless they are
    the core or one of its ancestors, a sibling post of the same kind, or
    inside a core that has no other prose (a forum thread).
    """
    keep = {core.el, *core.el.iterancestors()}
    kinds = {(el.tag, el.get("class")) for el in keep}
    for block in spared:
        el = block.el
        if block.removed or el in keep or (el.tag, el.get("class")) in kinds:
            continue
        if not _is_strong_chrome(el):
            continue
        if core.contains(block) and core.prose - block.prose < _SPARED_REST:
            continue
        block.remove(blocks)


def _grow(core: Block, page: Block, by_el: dict[lxml_html.HtmlElement, Block]) -> Block:
    """Climb from the core until it holds ``_COVERAGE`` of the page's paragraph text.

    At each level, siblings that are link lists (or empty, except media
    and tables) are dropped and the others join the content.
    """
    block, covered = core, core.good
    dropped = []
    while covered < _COVERAGE * page.good and block.parent is not None:
        parent = block.parent
        for sibling in parent.el:
            stats = by_el.get(sibling)
            if sibling is block.el or stats is None:  # inline siblings stay
                continue
            if stats.text == 0:
                keep = sibling.tag in ("figure", "img", "picture", "table")
            else:
                keep = stats.link <= _SIBLING_MAX_LINKS * stats.text
            if keep:
                covered += stats.good
            else:
                dropped.append(sibling)
        block = parent
    _drop(dropped)
    return block


def _container(core: Block, blocks: list[Block], body: lxml_html.HtmlElement) -> Block:
    by_el = {block.el: block for block in blocks if not block.removed}
    page = blocks[-1]
    if core.prose >= _WEAK_CORE:
        return _grow(core, page, by_el)
    # No real prose: the content is the page minus chrome, bounded by <main> if any.
    mains = [by_el[el] for el in body.iter("main") if el in by_el]
    if mains:
        main = max(mains, key=lambda block: block.text)
        if main is core or (main.text >= _MAIN_SHARE * page.text and main.contains(core)):
            return main
    return page


def _prune(container: Block, blocks: list[Block]) -> None:
    """Drop link lists and captions inside a container that is mostly prose.

    A shop grid or a listing is links by nature and is left alone.
    """
    if not container.text or container.prose < _PROSE_CONTAINER * container.text:
        return
    by_el = {block.el: block for block in blocks if not block.removed}
    dropped = []
    for el in container.el.iterdescendants():
        block = by_el.get(el)
        if block is None:
            continue
        if el.tag == "figcaption" or (
            el.tag in _PRUNED_TAGS
            and block.text
            and block.prose < _PRUNE_KEEP_SHARE * container.prose
            and block.commas < _PRUNE_MAX_COMMAS
            and block.link > _PRUNE_MAX_LINKS * block.text
        ):
            dropped.append(el)
    _drop(dropped)


def extract_main(body: lxml_html.HtmlElement) -> lxml_html.HtmlElement:
    """The element holding the main content of ``body``, boilerplate removed (in place).

    Returns ``body`` itself, cleaned of chrome, when no paragraph is found
    (an empty or script-only page, a page of bare links).
    """
    clean_tree(body, hidden=False)
    chrome = Chrome(body)
    blocks = walk(body, chrome)
    spared = _strip_chrome(blocks, chrome)
    core = _find_core(blocks)
    if core is None:
        if chrome.depth > MAX_DEPTH - 2:
            flatten_deep(body)
        return body
    if spared:
        _second_look(core, spared, blocks)
    container = _container(core, blocks, body)
    _prune(container, blocks)
    if chrome.depth > MAX_DEPTH - 2:  # walk() counts from <body>, XPath from <html>
        flatten_deep(container.el)
    return container.el
