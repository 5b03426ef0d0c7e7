"""Chrome that is the page's content: the posts of a thread, the sections of a page.

Chrome is found by class/id words (:mod:`statecrawl.content._pagetext`) and
stripped block by block, each judged alone against the page's paragraph
text (:func:`statecrawl.content.maincontent.extract_main`). Two kinds of
content are named like chrome and cut into many blocks, none big enough
alone to be spared:

* the posts of a forum thread, a Q&A or a link-aggregator page:
  ``comment`` is a chrome word, right for the reader comments below an
  article, wrong where the comments are what the page is for -- the
  thread went post by post, leaving the first post or a sidebar;
* the repeated sections of a service or landing page whose class carries
  a chrome word by accident: ``lm_navSource`` (the source of a
  scroll-spy nav), ``banner-inner``, ``accordion-item__dropdown``.

What tells content from chrome here is how much of the page a *kind* of
block holds together. :func:`content_chrome` groups the chrome blocks by
kind and a kind whose blocks together hold ``_CONTENT_SHARE`` of the
page's paragraph text is content, not chrome: a sidebar, a menu or the
comments below an article hold less than the text beside them.

* A thread kind is a block named by a thread word, keyed by its tag and
  first class word (``<li class="comment full">`` and ``<li class="comment
  oneline">`` are one kind; unique ids do not split a kind). A single
  block counts (``<section id="comments">`` holding the thread). A page
  that says it is a news story or a blog post (:data:`_ARTICLE`) has
  reader comments, however long, and no thread.
* Any other kind is keyed by its tag and the class tokens that hold the
  chrome words, and must repeat ``_REPEAT_MIN`` times. Pop-ups, modals
  and consent or sign-up forms (``_OVERLAY_WORDS``) never count: eleven
  hidden offer pop-ups can hold more text than the page they sit on.

Chrome inside such a block (a reply ``<form>`` holding the post's text,
a byline, a share bar) is then judged against the block's own text, not
the page's (:func:`enclosing`): it stays only if it holds most of it.

A thread also loses posts that are not chrome. The content's core is the
best post body and the content grows from it until it holds most of the
page's paragraph text: a long answer or a long log fills that alone, and
the question above the answers, or the short posts around the long one,
are left out. :func:`thread_scope` takes them back: when the core is
named a post body (``s-prose js-post-body``, ``topic-body crawler-post``,
``messageContent``), the blocks of its exact kind with text outside the
content are the other posts of its thread, and the content grows to
their common ancestor -- never to ``<body>``.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree
from lxml import html as lxml_html

from statecrawl.content._names import CHROME_WORDS, name_words, value_words
from statecrawl.content._pagetext import Block

__all__ = ["INNER_KEEP_SHARE", "content_chrome", "enclosing", "thread_scope"]

#: Class/id words of the blocks of a comment thread, each post or the whole list.
_THREAD_WORDS: frozenset[str] = frozenset({"comment", "comments", "reply", "replies", "disqus"})
#: Share of the page's paragraph text a kind of chrome block must hold to be content:
#: above what an article's reader comments hold (up to ~0.55 of the page, with the article).
_CONTENT_SHARE = 0.6
#: Blocks a kind of non-thread chrome must count, outermost, to be the repeated sections of a page.
_REPEAT_MIN = 3
#: Words of what covers the page rather than sits in it: never content, however much text.
_OVERLAY_WORDS: frozenset[str] = frozenset({
    "popup", "modal", "overlay", "offcanvas", "drawer", "cookie", "cookies", "consent", "gdpr",
    "onetrust", "newsletter", "subscribe", "subscription", "signup", "login",
})  # fmt: skip
#: Chrome inside a content block holding more than this share of the block's own text is
#: the block's text (a reply form around the post); less (a byline, a share bar) goes.
INNER_KEEP_SHARE = 0.5
#: A page that says it is a news story or a blog post: an hAtom ``hentry``, an
#: ``<article class="story">`` (or ``article``), a schema.org NewsArticle or BlogPosting
#: (microdata or JSON-LD), a blog's comment form ``#respond``. Its comments are reader
#: comments. (Plain schema.org ``Article`` is no sign: forum software declares its
#: threads so.) Evaluated only when a thread is found.
_ARTICLE = etree.XPath(
    "boolean(//*[@id='respond' or contains(concat(' ', normalize-space(@class), ' '), ' hentry ')"
    " or contains(@itemtype, 'NewsArticle') or contains(@itemtype, 'BlogPosting')]"
    " | //article[contains(concat(' ', normalize-space(@class), ' '), ' story ')"
    " or contains(concat(' ', normalize-space(@class), ' '), ' article ')]"
    " | //script[@type='application/ld+json'][contains(., 'NewsArticle') or contains(., 'BlogPosting')])"
)

#: Class words of a post body: a core so named is one post of a thread.
_POST_WORDS: frozenset[str] = frozenset({"post", "comment", "answer", "message", "reply"})
#: Chars of paragraph text a block of the core's kind needs to count as another post.
_POST_MIN = 100
#: Siblings met while growing to the whole thread with more links are link lists, left out
#: (as when the content grows from its core).
_POST_MAX_LINKS = 0.5

_Kind = tuple[bool, str, tuple[str, ...]]  # (a thread kind, tag, the class words keying it)


def _kind(el: lxml_html.HtmlElement) -> _Kind | None:
    """The kind of a chrome element; None for an overlay, or chrome by its id alone."""
    cls = el.get("class", "")
    words = name_words(el)
    tokens = cls.split()
    if not _THREAD_WORDS.isdisjoint(words):
        return True, el.tag, tuple(tokens[:1])
    if not _OVERLAY_WORDS.isdisjoint(words):
        return None
    named = tuple(t for t in tokens if not CHROME_WORDS.isdisjoint(value_words(t)))
    return (False, el.tag, named) if named else None


def content_chrome(chrome: list[Block], page: Block) -> dict[Block, int]:
    """The chrome blocks that are content, each with its own paragraph text.

    ``chrome`` is the chrome blocks of ``page`` in post-order, their counts
    untouched. A block's own text leaves out the content blocks nested in
    it (the replies under a post): the chrome inside it is judged against
    the post alone.
    """
    kinds: dict[_Kind, list[Block]] = {}
    for block in chrome:
        if block.good:
            kind = _kind(block.el)
            if kind is not None:
                kinds.setdefault(kind, []).append(block)
    threads: list[Block] = []
    sections: list[Block] = []
    for (is_thread, _, _), members in kinds.items():
        group = dict.fromkeys(members, 0)
        outer = [block for block in members if enclosing(block, group) is None]  # replies count once
        if (is_thread or len(outer) >= _REPEAT_MIN) and sum(b.good for b in outer) >= _CONTENT_SHARE * page.good:
            (threads if is_thread else sections).extend(members)
    if threads and _ARTICLE(page.el):
        threads = []
    found = {block: block.good for block in (*threads, *sections)}
    for block in list(found):
        outer_block = enclosing(block, found)
        if outer_block is not None:
            found[outer_block] -= block.good
    return found


def enclosing(block: Block, blocks: dict[Block, int]) -> Block | None:
    """The nearest ancestor of ``block`` among ``blocks``, if any."""
    parent = block.parent
    while parent is not None:
        if parent in blocks:
            return parent
        parent = parent.parent
    return None


def thread_scope(core: Block, content: Block, blocks: list[Block], remove: Callable[[Block], None]) -> Block:
    """``content`` grown to the other posts of the core's thread, if the core is a post body.

    ``blocks`` is the page's blocks (:func:`statecrawl.content._pagetext.walk`);
    link lists met on the way up go through ``remove``. Returns ``content``
    itself when the core is no post or has no kin outside it.
    """
    cls = core.el.get("class")
    if not cls or _POST_WORDS.isdisjoint(value_words(cls)):
        return content
    kind = (core.el.tag, cls)
    kin = [
        block for block in blocks
        if not block.removed and block.good >= _POST_MIN and (block.el.tag, block.el.get("class")) == kind
        and block is not content and not content.contains(block)
    ]  # fmt: skip
    top: Block | None = content
    while top is not None and not all(top.contains(block) for block in kin):
        top = top.parent
    if not kin or top is None or top.el.tag == "body":
        return content
    by_el = {block.el: block for block in blocks[top.first : top.index] if not block.removed}
    block = content
    while block is not top:
        parent = block.parent
        assert parent is not None  # top is an ancestor
        for sibling in parent.el:
            stats = by_el.get(sibling)
            if sibling is not block.el and stats is not None and not stats.removed:
                if stats.text and stats.link > _POST_MAX_LINKS * stats.text:
                    remove(stats)
        block = parent
    return top
