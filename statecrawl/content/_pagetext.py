"""Text statistics of a page tree, gathered in one walk; site chrome found on the way.

:func:`walk` visits ``<body>`` once (``iterwalk``: iterative, so a 5,000-level
nesting does not hit Python's recursion limit) and returns a :class:`Block`
for every block element, in post-order, with the text under it counted:
all of it, the part in links, the part in paragraphs, the part in prose.

Inline elements (``a``, ``em``, ``span``...) pass their text up to the
enclosing block, which closes a *paragraph* when it ends. A paragraph of
``_PARAGRAPH_MIN`` chars or more that is not mostly links is *good* text and
gives a Readability content score (``1 + commas + min(chars/100, 3)``) to
its ancestors: all of it to the parent, 1/2, 1/6, 1/9 and 1/12 further up.
Text loose in a ``<div>`` (no ``<p>`` around it) is a paragraph of its own
whose parent is that ``<div>``, as Readability's div-to-p rewrite makes it.

The walk also finds what :mod:`statecrawl.content.maincontent` strips before
choosing the content (:class:`Chrome`): hidden elements, skipped at once,
and site chrome -- ``nav``, ``aside``, ``footer``, ``form``, the page's
banner ``header``, navigation ARIA roles, and class/id words such as menu,
cookie, share or comments. Removing chrome afterwards does not need a
second walk: :meth:`Block.remove` subtracts the subtree's counts and scores
from its ancestors, which is why each block remembers what it passed up.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

from statecrawl.content._names import CHROME_ROLES, chrome_names, name_flags

__all__ = ["Block", "Chrome", "is_hidden", "walk"]

_PARAGRAPH_MIN = 25  # chars: a shorter block is a label, not a paragraph
_PARAGRAPH_MAX_LINKS = 0.5  # ...and one with more than half its text in links is a link list
_PROSE_MIN = 120  # "prose": a paragraph this long...
_PROSE_MAX_LINKS = 0.3  # ...with at most this link density
_SCORE_LEVELS = 5  # Readability scores the five nearest ancestors of a paragraph
_SCORE_DIVIDERS = (1, 2, 6, 9, 12)  # ...dividing its score by these

#: Elements whose text flows into the enclosing block's paragraph.
_INLINE: frozenset[str] = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "big", "br", "cite", "code", "data", "del", "dfn", "em",
    "font", "i", "img", "ins", "kbd", "mark", "q", "s", "samp", "small", "span", "strike",
    "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "picture",
})  # fmt: skip

#: Chrome by tag alone; ``header`` only outside sectioning content (HTML-AAM).
_CHROME_TAGS: frozenset[str] = frozenset({"nav", "aside", "footer", "form", "header"})
_SECTIONING: frozenset[str] = frozenset({"article", "aside", "main", "nav", "section"})

#: Table parts whose "header" is the table's head row (``sticky-header``), not the page banner.
_TABLE_HEADS: frozenset[str] = frozenset({"table", "thead", "tr", "th"})
_HIDING_ATTRIBUTES: frozenset[str] = frozenset({"hidden", "aria-hidden", "aria-modal", "role", "style"})
#: Headings that can label a section: one named ``related``/``recommend``
#: (``relatedpoststitle``, glued words the word split cannot see) makes its section chrome.
_SECTION_HEADINGS: frozenset[str] = frozenset({"h2", "h3", "h4", "h5", "h6"})
_RELATED_NAMES: tuple[str, ...] = ("related", "recommend")
#: Containers whose loose text (no ``<p>`` around it) is a paragraph of their own:
#: it scores the container itself, as Readability's div-to-p rewrite would.
_LOOSE_TEXT_HOLDERS: frozenset[str] = frozenset({"div", "section", "article", "main", "td"})
_DIALOG_ROLES: frozenset[str] = frozenset({"dialog", "alertdialog"})
_HIDING_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def is_hidden(el: lxml_html.HtmlElement) -> bool:
    """Hidden per HTML, ARIA or inline style, or a modal dialog (cookie walls, pop-ups)."""
    if el.tag == "dialog" or el.get("hidden") is not None:
        return True
    if el.get("aria-hidden") == "true" or el.get("aria-modal") == "true":
        return True
    role = el.get("role")
    if role and role.strip().lower() in _DIALOG_ROLES:
        return True
    style = el.get("style")
    return bool(style and _HIDING_STYLE.search(style))


class Block:
    """Counts (in chars) of the text under one element, and its Readability score."""

    __slots__ = (
        "chrome", "commas", "el", "first", "good", "in_link", "in_section", "index", "inline_commas",
        "inline_link", "inline_text", "link", "parent", "prose", "removed", "score", "sent", "text",
    )  # fmt: skip

    def __init__(
        self, el: lxml_html.HtmlElement, parent: Block | None, in_link: bool, in_section: bool, first: int
    ) -> None:
        self.el = el
        self.parent = parent
        self.in_link = in_link  # inside an <a>
        self.in_section = in_section  # inside sectioning content (article, aside, main, nav, section)
        self.first = first  # position in walk()'s list of this block's first descendant block
        self.index = -1  # ... and of this block
        self.text = 0
        self.link = 0  # text inside <a>
        self.good = 0  # text in paragraphs
        self.prose = 0  # text in prose paragraphs
        self.commas = 0
        self.score = 0.0  # received from the paragraphs below
        self.sent: list[float] | None = None  # score this subtree gave its 1st..5th ancestor
        self.inline_text = 0  # the paragraph still open in this element
        self.inline_link = 0
        self.inline_commas = 0
        self.chrome = False
        self.removed = False

    def link_density(self) -> float:
        return self.link / self.text if self.text else 0.0

    def contains(self, other: Block) -> bool:
        parent = other.parent
        while parent is not None:
            if parent is self:
                return True
            parent = parent.parent
        return False

    def remove(self, blocks: list[Block]) -> None:
        """Take the element's counts and scores from its ancestors; mark its subtree removed.

        ``blocks`` is the list :func:`walk` returned. The element stays in
        the tree: the caller drops it once the content is chosen, so that a
        choice found wrong can still fall back to the untouched page.
        """
        for block in blocks[self.first : self.index + 1]:
            block.removed = True
        ancestor, level = self.parent, 0
        while ancestor is not None:
            ancestor.text -= self.text
            ancestor.link -= self.link
            ancestor.good -= self.good
            ancestor.prose -= self.prose
            ancestor.commas -= self.commas
            if self.sent is not None and level < _SCORE_LEVELS:
                ancestor.score -= self.sent[level]
            ancestor, level = ancestor.parent, level + 1


class Chrome:
    """What the walk finds to strip: hidden elements and site chrome."""

    def __init__(self, body: lxml_html.HtmlElement) -> None:
        self.body = body
        self.hidden: list[lxml_html.HtmlElement] = []
        self.shown: list[lxml_html.HtmlElement] = []  # hidden, but holding half the page: kept
        self.blocks: list[Block] = []  # chrome blocks, in post-order
        self.depth = 0  # of the deepest element, counted from body
        self.sure: set[lxml_html.HtmlElement] = set()  # chrome whatever text it holds
        self._flags: dict[str, tuple[bool, bool]] = {}
        self._half_page: float | None = None

    def start(self, block: Block, keys: list[str]) -> bool:
        """Mark ``block`` as chrome or not; True if the element is hidden and to be skipped.

        Attributes are only read when the element has any (``keys()`` is cheap).
        """
        el = block.el
        tag = el.tag
        if tag == "header":
            block.chrome = not block.parent.in_section  # type: ignore[union-attr]
        elif tag in _CHROME_TAGS:
            block.chrome = True
        if not keys:
            return False
        if not _HIDING_ATTRIBUTES.isdisjoint(keys) and is_hidden(el) and self._hide(el):
            return True
        if block.chrome or tag in _INLINE or tag in ("article", "main"):
            return False  # inline chrome (icons, share links) goes with its block
        if "role" in keys and " ".join(el.get("role", "").lower().split()) in CHROME_ROLES:
            block.chrome = True
            return False
        chrome = content = False
        for name in ("class", "id"):
            if name in keys:
                flags = self._words(el.get(name, ""))
                chrome, content = chrome or flags[0], content or flags[1]
        if chrome and tag in _TABLE_HEADS:  # ``sticky-header``: the table's own head row
            chrome = bool(chrome_names(el) - {"header"})
        block.chrome = chrome and not content
        if tag in _SECTION_HEADINGS:
            self._label(block)
        return False

    def _label(self, heading: Block) -> None:
        """A heading named related posts, first in its section, makes the section sure chrome.

        Related posts often share the article's own markup (``<article
        class="post">`` teasers of full paragraphs), so only their heading
        tells them apart; a sure chrome block goes whatever text it holds.
        """
        section = heading.parent
        if section is None or section.parent is None or len(section.el) < 2 or section.el[0] is not heading.el:
            return
        value = f"{heading.el.get('class', '')} {heading.el.get('id', '')}".lower()
        if any(name in value for name in _RELATED_NAMES):
            heading.chrome = section.chrome = True
            self.sure.add(section.el)

    def _words(self, value: str) -> tuple[bool, bool]:
        """(has a chrome word, has a content word) for a class or id value, cached."""
        flags = self._flags.get(value)
        if flags is None:
            flags = self._flags[value] = name_flags(value)
        return flags

    def _hide(self, el: lxml_html.HtmlElement) -> bool:
        """Queue a hidden element for removal unless it holds half the page's text.

        A page saved with a modal open has ``aria-hidden`` on its wrapper.
        """
        if self._half_page is None:
            self._half_page = len(self.body.text_content()) / 2
        if len(el.text_content()) >= self._half_page:
            self.shown.append(el)
            return False
        self.hidden.append(el)
        return True


def _close_paragraph(block: Block, ancestors: list[Block]) -> None:
    """Count the block's open paragraph, and score its ancestors if it is good text."""
    size = block.inline_text + block.inline_link
    if not size:
        return
    block.text += size
    block.link += block.inline_link
    block.commas += block.inline_commas
    if size < _PARAGRAPH_MIN or block.inline_link > _PARAGRAPH_MAX_LINKS * size:
        return
    block.good += size
    if size >= _PROSE_MIN and block.inline_link <= _PROSE_MAX_LINKS * size:
        block.prose += size
    score = 1 + block.inline_commas + min(size / 100, 3.0)
    # Loose text is an implied <p> whose parent is the block itself: the block is
    # the first to receive (at full score); otherwise its parent is.
    first = 0 if block.el.tag in _LOOSE_TEXT_HOLDERS else 1
    chain = [block, *reversed(ancestors[-(_SCORE_LEVELS - 1 + first) :])]  # upwards
    for sender in chain[:-1]:
        if sender.sent is None:
            sender.sent = [0.0] * _SCORE_LEVELS
    for receiver in range(first, len(chain)):
        share = score / _SCORE_DIVIDERS[receiver - first]
        chain[receiver].score += share
        # what each block between the paragraph and this ancestor passed up to it
        for below in range(receiver):
            chain[below].sent[receiver - below - 1] += share  # type: ignore[index]


def walk(body: lxml_html.HtmlElement, chrome: Chrome | None = None) -> list[Block]:
    """A :class:`Block` for every block element under and including ``body``, in post-order.

    With ``chrome``, hidden elements are skipped and queued in
    ``chrome.hidden`` (they count for nothing), chrome blocks are listed in
    ``chrome.blocks``, and ``chrome.depth`` is set to the deepest nesting.
    """
    blocks: list[Block] = []
    stack: list[Block] = []
    deepest = 0
    walker = etree.iterwalk(body, events=("start", "end"))
    for event, el in walker:
        if event == "start":
            parent = stack[-1] if stack else None
            if len(stack) > deepest:  # noqa: PLR1730 (no max() call per element)
                deepest = len(stack)
            tag = el.tag
            if parent is None:
                block = Block(el, None, tag == "a", tag in _SECTIONING, len(blocks))
            else:
                in_link, in_section = parent.in_link or tag == "a", parent.in_section or tag in _SECTIONING
                block = Block(el, parent, in_link, in_section, len(blocks))
            if chrome is not None and parent is not None:
                keys = el.keys()
                if (keys or tag in _CHROME_TAGS) and chrome.start(block, keys):
                    walker.skip_subtree()
                    block.removed = True
                    stack.append(block)
                    continue
            stack.append(block)
            text = el.text
            if text and (size := len(text.strip())):
                if block.in_link:
                    block.inline_link = size
                else:
                    block.inline_text = size
                    block.inline_commas = text.count(",")
            continue
        block = stack.pop()
        parent = block.parent
        if block.removed:  # hidden: nothing counted, only its tail below
            pass
        elif parent is not None and el.tag in _INLINE:
            parent.inline_text += block.inline_text
            parent.inline_link += block.inline_link
            parent.inline_commas += block.inline_commas
        else:
            _close_paragraph(block, stack)
            block.index = len(blocks)
            blocks.append(block)
            if block.chrome:
                chrome.blocks.append(block)  # type: ignore[union-attr]
        if parent is None:
            continue
        if not block.removed:
            parent.text += block.text
            parent.link += block.link
            parent.good += block.good
            parent.prose += block.prose
            parent.commas += block.commas
        tail = el.tail
        if tail and (size := len(tail.strip())):
            if parent.in_link:
                parent.inline_link += size
            else:
                parent.inline_text += size
                parent.inline_commas += tail.count(",")
    if chrome is not None:
        chrome.depth = deepest
    return blocks
