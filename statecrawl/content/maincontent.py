"""Find the main content of a parsed page: the step between parsing and Markdown.

:func:`extract_main` takes a page's ``<body>`` and returns the element
holding its main content, with the boilerplate inside removed. It needs
one walk over the tree (:func:`statecrawl.content._pagetext.walk`) and no per-site
rules:

1. :func:`clean_tree` drops what is never text: scripts, embeds, form
   controls, decorative images; the walk sets hidden elements aside.
   A hidden element holding half the page (a React stream chunk
   ``<div hidden id="S:1">``) is the page: it stays, unhidden.
2. Chrome is marked for removal -- ``nav``, ``aside``, ``footer``, the
   banner ``header``, navigation roles, class/id words such as menu,
   cookie, share, comments -- unless it holds a large share of the page's
   paragraph text: a ``<div class="has-sidebar">`` wrapping the page must
   survive. Spared chrome gets a second look once the core is known. A
   section whose first heading is named related posts is chrome whatever
   it holds (teasers in the article's own markup, with full paragraphs).
   Chrome blocks of one kind holding most of it together are content
   (:mod:`statecrawl.content._thread`): forum posts, landing-page sections.
   Class/id words are read by :mod:`statecrawl.content._names`.
3. The *core* is Readability's top candidate: paragraphs score their
   nearest ancestors, and the best score scaled by ``1 - link density``
   wins, so concentrated prose beats a wrapper that merely holds more text
   (related-story teasers, comment threads). A core inside a spared
   footer, or inside the comments while the page has prose elsewhere, is
   looked for again without them.
4. The core grows to what the page shows as content. A page without real
   prose (a shop grid, a listing, a landing page) gets its ``<main>`` or
   whole cleaned body. Otherwise the core climbs through its ancestors,
   never past ``<main>``, until it holds most of the page's paragraph
   text, taking the siblings that are not link lists: service pages spread
   over many ``<section>`` and forum threads of sibling posts come out whole.
   A page's list of teasers or products (:mod:`statecrawl.content._listing`)
   widens a core found in one teaser or beside the list, and stands for a
   page without prose, with its heading, instead of the whole ``<main>``.
5. Inside a prose container, link-dense blocks with little punctuation
   (share bars, tag lists, "more stories"), captions, photo credits,
   galleries and bylines go -- unless the link-dense blocks hold most of
   its text (the teaser cards of a section page are its content).
6. Nothing is removed from the tree until the content is known. A pick
   that is tiny beside the page's visible text and has no prose of its
   own (content wrappers named ``skip-item`` stripped as chrome, a cookie
   notice left as the only paragraph) gives way to the broad selection:
   ``<body>`` minus hidden elements and chrome landmarks. A page with
   visible text never comes out empty.
7. A product page (:mod:`statecrawl.content._product`) loses its reviews and
   recommendation strips before step 3; repeated blocks leave the content.
8. Hidden panels inside the content that are text, not menus (tabs,
   accordions), stay and are unhidden; every other hidden element goes.

The thresholds were tuned on the scrapinghub article benchmark and the
WCXB dev set (``bench/markdown.py``); each is named below with its role.
"""

from __future__ import annotations

import re

from lxml import html as lxml_html

from statecrawl.content._cleaning import MAX_DEPTH, clean_tree, drop, flatten_deep, hidden_parts, unhide
from statecrawl.content._listing import narrow, with_list
from statecrawl.content._names import is_caption, is_comments, is_landmark, is_strong_chrome
from statecrawl.content._pagetext import Block, Chrome, walk
from statecrawl.content._product import duplicates, is_product_page, product_extras
from statecrawl.content._thread import INNER_KEEP_SHARE, content_chrome, enclosing, thread_scope

__all__ = ["MAX_DEPTH", "clean_tree", "extract_main", "flatten_deep"]

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
_PRUNE_MAX_SHARE = 0.5  # blocks found holding more of its text are its content: none go
_FALLBACK_SHARE = 0.2  # content holding less of the broad selection's text...
_FALLBACK_GOOD = 200  # ...and less paragraph text than this (or inside chrome) is a miss
_CAPTION_MAX_SHARE = 0.5  # captions and bylines go unless they hold this share of its prose
_PRUNED_TAGS: frozenset[str] = frozenset({
    "div", "section", "ul", "ol", "table", "dl", "header", "footer", "nav", "figure", "aside",
})  # fmt: skip


def _strip_chrome(blocks: list[Block], chrome: Chrome, doomed: list[Block]) -> list[Block]:
    """Remove the chrome holding little paragraph text; return the spared.

    Outer chrome is judged first (the list is in post-order), with the
    counts it had before anything inside it went. Chrome that is content
    (thread posts) stays; the chrome inside it is judged against its text.
    """
    limit = _KEEP_SHARE * blocks[-1].good
    content = content_chrome(chrome.blocks, blocks[-1])
    spared = []
    for block in reversed(chrome.blocks):
        if block.removed or block in content:
            continue
        outer = enclosing(block, content) if content else None
        if outer is not None and block.good > INNER_KEEP_SHARE * content[outer]:
            continue
        if outer is not None or block.good <= limit or block.good < _KEEP_MIN or block.el in chrome.sure:
            _remove(block, blocks, doomed)
        else:
            spared.append(block)
    return spared


def _remove(block: Block, blocks: list[Block], doomed: list[Block]) -> None:
    block.remove(blocks)
    doomed.append(block)


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


def _second_look(core: Block, spared: list[Block], blocks: list[Block], doomed: list[Block]) -> None:
    """Drop the spared chrome now known not to be the content.

    Comments or related stories may hold more paragraph text than a short
    article, so the first pass spared them. They go now unless they are
    the core or one of its ancestors, a sibling post of the same kind, or
    inside a core that has no other prose (a forum thread).
    """
    keep = {core.el, *core.el.iterancestors()}
    kinds = {(el.tag, el.get("class")) for el in keep if el.get("class")}
    for block in spared:
        el = block.el
        if block.removed or el in keep or (el.tag, el.get("class")) in kinds:
            continue
        if not is_strong_chrome(el):
            continue
        if core.contains(block) and core.prose - block.prose < _SPARED_REST:
            continue
        _remove(block, blocks, doomed)


def _grow(core: Block, blocks: list[Block], doomed: list[Block], spared: list[Block]) -> Block:
    """Climb from the core until it holds ``_COVERAGE`` of the page's paragraph text.

    Spared chrome outside the core does not count: a consent centre or a
    promo box is not text the core must reach. At each level, siblings
    that are link lists (or empty, except media and tables) are removed
    and the others join the content. The climb stops at ``<main>``: what
    lies beside it (teasers with excerpts, a "more stories" rail) is not
    the page's content whatever its prose.
    """
    by_el = {block.el: block for block in blocks if not block.removed}
    outside = [b for b in spared if not b.removed and not (b is core or b.contains(core))]
    target = _COVERAGE * (blocks[-1].good - sum(b.good for b in outside))
    block, covered = core, core.good
    while covered < target and block.parent is not None and block.el.tag != "main":
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
                _remove(stats, blocks, doomed)
        block = parent
    return block


def _container(core: Block, blocks: list[Block], doomed: list[Block], spared: list[Block]) -> Block:
    page = blocks[-1]
    if core.prose >= _WEAK_CORE:
        return _grow(core, blocks, doomed, spared)
    # No real prose: the content is the page minus chrome, bounded by <main> if any.
    mains = [block for block in blocks if block.el.tag == "main" and not block.removed]
    if mains:
        main = max(mains, key=lambda block: block.text)
        if main is core or (main.text >= _MAIN_SHARE * page.text and main.contains(core)):
            return main
    return page


def _prune(container: Block, blocks: list[Block], doomed: list[Block]) -> None:
    """Remove link lists and captions inside a container that is mostly prose.

    A block named a caption or a byline that holds half its prose is no
    caption (``author-content`` wrapping the text). A shop grid or a listing is links by nature and is left alone, and so
    are teaser cards that together hold most of the container's text: they
    are the content of a news section page, not boilerplate beside it.
    """
    if not container.text or container.prose < _PROSE_CONTAINER * container.text:
        return
    max_prose = _PRUNE_KEEP_SHARE * container.prose
    max_caption = _CAPTION_MAX_SHARE * container.prose
    found: list[Block] = []
    for block in blocks[container.first : container.index]:  # post-order: inner blocks first
        el = block.el
        if block.removed:
            continue
        if (
            el.tag == "figcaption"
            or (is_caption(el) and block.prose < max_caption)
            or (
                el.tag in _PRUNED_TAGS
                and block.text
                and block.prose < max_prose
                and block.commas < _PRUNE_MAX_COMMAS
                and block.link > _PRUNE_MAX_LINKS * block.text
            )
        ):
            found.append(block)
    outer: list[Block] = []  # reversed post-order: a block, then the blocks inside it
    for block in reversed(found):
        if not (outer and outer[-1].contains(block)):
            outer.append(block)
    if sum(block.text for block in outer) > _PRUNE_MAX_SHARE * container.text:
        return
    for block in outer:
        _remove(block, blocks, doomed)


def _out_of_chrome(
    core: Block, spared: list[Block], blocks: list[Block], doomed: list[Block]
) -> Block | None:
    """A core found inside spared chrome is found again without it.

    Legal text in the ``<footer>`` (a landmark), unless the rest of the
    page has no paragraph text to speak of; a long comment in the comment
    thread, if the rest of the page has prose of its own (a forum thread
    whose posts are all named comments has none).
    """
    for block in spared:
        if block.removed or not (block is core or block.contains(core)):
            continue
        if is_landmark(block.el):
            if blocks[-1].good - block.good < _KEEP_MIN:
                return core
        elif not is_comments(block.el) or blocks[-1].prose - block.prose < _WEAK_CORE:
            continue
        _remove(block, blocks, doomed)
        return _find_core(blocks)
    return core


def _landmarks(blocks: list[Block], chrome: Chrome) -> tuple[list[Block], int]:
    """The page's chrome landmarks and the text left without them: the broad selection.

    Landmarks are chrome by tag or role (``nav``, ``aside``, ``footer``,
    the banner ``header``, navigation roles), not by class words; one that
    holds half the page is a broken nesting (an unclosed ``<nav>``) and stays.
    Called before anything is removed, on the counts of the whole page.
    """
    page = blocks[-1]
    found: list[Block] = []
    text = page.text
    for block in reversed(chrome.blocks):  # outer first
        el = block.el
        if not is_landmark(el):
            continue
        if block.text > page.text / 2 or (found and found[-1].contains(block)):
            continue
        found.append(block)
        text -= block.text
    return found, text


def _missed(container: Block, broad: int, spared: list[Block]) -> bool:
    """Whether the content found is a miss: tiny beside the broad selection, and no prose.

    The content of a page whose wrappers carry chrome words (``skip-item``,
    ``search-results``) goes with the chrome, leaving a few links or a
    cookie notice (spared as chrome holding most of the paragraph text).
    """
    if container.text >= _FALLBACK_SHARE * broad:
        return False
    if container.good < _FALLBACK_GOOD:
        return True
    return any(block is container or block.contains(container) for block in spared if not block.removed)


def extract_main(body: lxml_html.HtmlElement) -> lxml_html.HtmlElement:
    """The element holding the main content of ``body``, boilerplate removed (in place).

    Returns ``body`` itself, cleaned of chrome, when no paragraph is found
    (an empty or script-only page, a page of bare links). When the content
    found is empty or tiny beside the page's visible text (chrome words on
    the content's own wrappers, a cookie notice as the only prose), the
    broad selection is returned instead: ``body`` minus hidden elements and
    chrome landmarks.
    """
    product = is_product_page(body)  # before cleaning: it reads JSON-LD and <meta>
    clean_tree(body, hidden=False)
    chrome = Chrome(body)
    blocks = walk(body, chrome)
    unhide(chrome.shown)
    landmarks, broad = _landmarks(blocks, chrome)
    doomed: list[Block] = []
    extras = product_extras(blocks) if product else []
    for block in extras:
        _remove(block, blocks, doomed)
    spared = _strip_chrome(blocks, chrome, doomed)
    core = _find_core(blocks)
    if core is not None and spared:
        core = _out_of_chrome(core, spared, blocks, doomed)
    if core is None:
        container = blocks[-1]
    else:
        if spared:
            _second_look(core, spared, blocks, doomed)
        core = with_list(core, blocks)
        container = _container(core, blocks, doomed, spared)
        if core.prose < _WEAK_CORE:
            container = narrow(container, blocks)
        if container is not blocks[-1]:  # the question above the answers, the posts around the core
            container = thread_scope(core, container, blocks, lambda block: _remove(block, blocks, doomed))
        _prune(container, blocks, doomed)
        for block in duplicates(container, blocks, product):
            _remove(block, blocks, doomed)
    if _missed(container, broad, spared):
        drop(block.el for block in (*landmarks, *extras))
        container = blocks[-1]
    else:
        drop(block.el for block in doomed)
    drop(hidden_parts(container.el, chrome.hidden))
    if chrome.depth > MAX_DEPTH - 2:  # walk() counts from <body>, XPath from <html>
        flatten_deep(container.el)
    return container.el
