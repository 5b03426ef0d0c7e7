"""Golden files: one whole page per kind, converted by to_markdown and compared exactly.

Each ``golden/<kind>.html`` is a synthetic but realistic page with its site
chrome (navigation, header, sidebar, footer, cookie banner, share bars,
comments), so main-content detection and the Markdown-for-LLMs rewrites
are tested together; ``golden/<kind>.md`` is the Markdown wanted for it:
no chrome, tables intact (spans filled in), code fenced with its
language, no empty or dead links, only images with alt text.

A mismatch fails with a unified diff (expected, then actual). When a change
to the conversion is meant to change the output, regenerate the files with

    STATECRAWL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/content/test_golden.py

and review every changed ``.md`` by eye (``git diff tests/content/golden``)
before committing: a regenerated file is only right if it reads as what a
reader or a language model should get from the page.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from statecrawl.content.markdown import to_markdown

GOLDEN = Path(__file__).parent / "golden"
#: Page kind -> the URL the page is converted as (links resolve against it).
PAGES: dict[str, str] = {
    "article": "https://coastline.example/science/2024/brest-tide-gauge.html",
    "docs": "https://docs.statecrawl.example/en/1.4/guide/markdown.html",
    "product": "https://shop.alpine.example/p/ridgeline-45",
    "forum": "https://forum.scrapers.example/t/rowspan-cells-lost/4512",
    "listing": "https://trailhead.example/c/hiking-boots?ref=nav",
}
UPDATE = os.environ.get("STATECRAWL_UPDATE_GOLDEN", "").strip().lower() in ("1", "true", "yes")


def test_every_page_has_its_golden_file() -> None:
    assert {p.stem for p in GOLDEN.glob("*.html")} == set(PAGES)
    if not UPDATE:
        assert {p.stem for p in GOLDEN.glob("*.md")} == set(PAGES)


@pytest.mark.parametrize("kind", sorted(PAGES))
def test_page_converts_to_its_golden_markdown(kind: str) -> None:
    html = (GOLDEN / f"{kind}.html").read_text(encoding="utf-8")
    actual = to_markdown(html, PAGES[kind]) + "\n"
    golden = GOLDEN / f"{kind}.md"
    if UPDATE:
        golden.write_text(actual, encoding="utf-8")
        return
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"golden/{kind}.md (expected)", tofile=f"to_markdown({kind}.html) (actual)",
        ))
        pytest.fail(f"{kind}: the Markdown differs from golden/{kind}.md "
                    f"(STATECRAWL_UPDATE_GOLDEN=1 regenerates it; review the diff first):\n{diff}",
                    pytrace=False)


def test_golden_markdown_follows_the_rules() -> None:
    """What every golden file must show, whatever its page: checked apart from the exact text."""
    for kind in PAGES:
        text = (GOLDEN / f"{kind}.md").read_text(encoding="utf-8")
        prose = re.sub(r"(?ms)^(`{3,}).*?^\1$", "CODE", text)  # fenced code keeps its blank lines
        assert "[](" not in text and "](javascript:" not in text.lower(), kind
        assert "\n\n\n" not in prose and not any(line != line.rstrip() for line in text.splitlines()), kind
        assert "![](" not in text, kind  # default images="alt"
        assert "](/" not in text and "](.." not in text, kind  # links are absolute
