"""Code blocks made ready for the converter: the language named, the gutter gone.

html-to-markdown fences a ``<pre>`` and takes the language from a
``language-*`` or ``lang-*`` class on the ``<pre>`` or its ``<code>``, and
flattens the spans of a syntax highlighter to their text. Highlighters
name the language in many other ways, and many print line numbers beside
the code; :func:`prepare_code` rewrites, in place, each ``<pre>`` so that
the converter gets the language and the code alone:

* the language, looked for on the ``<pre>``, its first ``<code>`` and
  four ancestors that hold no other ``<pre>``: ``language-X`` / ``lang-X`` (Prism, highlight.js,
  kramdown), ``highlight-source-X`` (GitHub), ``highlight-X`` (Sphinx),
  ``brush: X`` (SyntaxHighlighter), ``data-lang`` / ``data-language``
  (Hugo, many blogs), or a bare class that is a known language name
  (``<pre class="python">``, pandoc's ``sourceCode python``,
  ``hljs python``); it is then set as ``language-X`` on the ``<pre>``;
* line-number gutters: a table of a gutter cell (line numbers only) beside
  a cell holding the ``<pre>`` (Pygments ``highlighttable``, Chroma
  ``lntable``, Rouge ``rouge-table``) is replaced by the ``<pre>``; a table
  inside a ``<pre>`` (highlight.js line numbers) becomes one line per row;
  elements of a line-number class inside a ``<pre>`` (``linenos``,
  ``lineno``, ``ln``, ``lnt``, ``line-numbers-rows``...) are removed.

The code text itself is never touched: no escaping, indentation and
blank lines as written.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

__all__ = ["code_language", "prepare_code"]

_PREFIXED = re.compile(
    r"(?:^|\s)(?:language|lang|highlight-source|highlight-text|highlight|sourcecode)-([\w+#.-]+)",
    re.IGNORECASE,
)
_BRUSH = re.compile(r"\bbrush:\s*([\w+#.-]+)", re.IGNORECASE)
#: Languages a bare class names (``<pre class="python">``): only these, as
#: any other bare class is a style (``prettyprint``, ``chroma``, ``shiki``).
_KNOWN: frozenset[str] = frozenset({
    "bash", "c", "clojure", "cpp", "csharp", "css", "dart", "diff", "dockerfile", "elixir",
    "erlang", "go", "golang", "graphql", "groovy", "haskell", "html", "ini", "java",
    "javascript", "js", "json", "jsx", "julia", "kotlin", "latex", "less", "lisp", "lua",
    "makefile", "markdown", "matlab", "nginx", "objectivec", "ocaml", "perl", "php",
    "powershell", "python", "python3", "r", "ruby", "rust", "sass", "scala", "scheme",
    "scss", "shell", "sh", "sql", "swift", "toml", "ts", "tsx", "typescript", "vb", "vim",
    "xml", "yaml", "yml", "zsh",
})  # fmt: skip
#: Class values that say "no language".
_NO_LANGUAGE: frozenset[str] = frozenset({"none", "nohighlight", "no-highlight", "default", "auto"})
#: Suffixes of GitHub's TextMate scopes (``highlight-text-html-basic``), not part of the name.
_SCOPE_SUFFIX = re.compile(r"-(?:basic|source|embedded|.*-.*)$")
_ANCESTORS = 4  # wrappers above a <pre> that may name its language (Sphinx: div > div > pre)

#: Class words of line numbers printed beside or inside code.
_GUTTER_WORDS: frozenset[str] = frozenset({
    "linenos", "lineno", "linenodiv", "linenumber", "linenumbers", "line-number",
    "line-numbers-rows", "ln", "lnt", "gutter", "rouge-gutter", "gl", "hljs-ln-n",
    "hljs-ln-numbers", "blob-num", "code-line-number",
})  # fmt: skip
_NUMBERS = re.compile(r"[\d\s]*")
_CELL_PATH = etree.XPath("./tr/td | ./tbody/tr/td | ./thead/tr/td | ./tr/th | ./tbody/tr/th")
_ROW_PATH = etree.XPath("./tr | ./tbody/tr | ./thead/tr | ./tfoot/tr")


def _classes(el: lxml_html.HtmlElement) -> str:
    value = el.get("class")
    return value if isinstance(value, str) else ""


def _language_of(el: lxml_html.HtmlElement) -> str | None:
    """The language one element names, or None."""
    for attribute in ("data-lang", "data-language"):
        value = (el.get(attribute) or "").strip().lower()
        if value:
            return value
    classes = _classes(el)
    if not classes:
        return None
    found = _PREFIXED.search(classes) or _BRUSH.search(classes)
    if found is not None:
        name = found.group(1).lower().rstrip(";")
        if found.re is _PREFIXED and "highlight-text-" in found.group(0).lower():
            name = _SCOPE_SUFFIX.sub("", name)
        return name
    for word in classes.lower().split():
        if word in _KNOWN:
            return word
    return None


def code_language(pre: lxml_html.HtmlElement) -> str | None:
    """The language a ``<pre>`` block is in, as its markup names it, or None."""
    code = pre.find(".//code")
    candidates = [pre] if code is None else [code, pre]
    ancestor = pre.getparent()
    for _ in range(_ANCESTORS):
        if ancestor is None or ancestor.tag not in ("div", "figure", "section", "td", "span"):
            break
        blocks = ancestor.iter("pre")
        if next(blocks, None) is not None and next(blocks, None) is not None:
            break  # a wrapper of several blocks (or a page) says nothing of this one
        candidates.append(ancestor)
        ancestor = ancestor.getparent()
    for el in candidates:
        name = _language_of(el)
        if name is not None:
            return None if name in _NO_LANGUAGE else name
    return None


def _has_gutter_class(el: lxml_html.HtmlElement) -> bool:
    classes = _classes(el)
    return bool(classes) and not _GUTTER_WORDS.isdisjoint(classes.lower().split())


def _is_gutter(cell: lxml_html.HtmlElement) -> bool:
    """A table cell beside code that holds line numbers: a gutter class, or digits or nothing."""
    return _has_gutter_class(cell) or _NUMBERS.fullmatch(cell.text_content()) is not None


def _drop(el: lxml_html.HtmlElement) -> None:
    """Remove ``el`` and its content, keeping its tail text."""
    if el.getparent() is not None:
        el.drop_tree()


def _unwrap_gutter_table(pre: lxml_html.HtmlElement) -> None:
    """Replace a line-number table around ``pre`` by the cell holding the code."""
    cell = next((a for a in pre.iterancestors("td", "th", "table")), None)
    if cell is None or cell.tag == "table":
        return
    table = next(cell.iterancestors("table"), None)
    if table is None or table.getparent() is None:
        return
    cells = _CELL_PATH(table)
    if len(cells) < 2 or len(_ROW_PATH(table)) != 1:  # highlighters write one row: gutter, code
        return
    if not all(c is cell or _is_gutter(c) for c in cells):
        return
    cell.tail = table.tail
    table.getparent().replace(table, cell)
    cell.drop_tag()


def _flatten_table_in_pre(table: lxml_html.HtmlElement) -> None:
    """A table inside a ``<pre>`` (one code line per row) becomes text lines."""
    lines = []
    for row in _ROW_PATH(table):
        cells = [c for c in row if isinstance(c.tag, str) and c.tag in ("td", "th")]
        code = [c for c in cells[:-1] if not _is_gutter(c)] + cells[-1:]  # numbers come first
        lines.append("".join(c.text_content() for c in code).rstrip("\n"))
    text = "\n".join(lines) + "\n"
    parent = table.getparent()
    if parent is None:
        return
    previous = table.getprevious()
    text += table.tail or ""
    if previous is not None:
        previous.tail = (previous.tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.remove(table)


def _strip_gutters(pre: lxml_html.HtmlElement) -> None:
    for table in list(pre.iter("table")):
        _flatten_table_in_pre(table)
    for el in list(pre.iterdescendants()):
        if isinstance(el.tag, str) and _has_gutter_class(el):
            _drop(el)


def prepare_code(root: lxml_html.HtmlElement) -> None:
    """Rewrite, in place, every ``<pre>`` under ``root`` as the module docstring says."""
    pres = list(root.iter("pre"))
    for pre in pres:
        if pre.getparent() is None:  # inside a gutter dropped earlier
            continue
        _unwrap_gutter_table(pre)
        _strip_gutters(pre)
        language = code_language(pre)
        for el in pre.iter("pre", "code"):  # what the converter reads is ours alone
            el.attrib.pop("class", None)
        if language:
            pre.set("class", f"language-{language}")
