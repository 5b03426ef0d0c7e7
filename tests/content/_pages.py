"""The building blocks of the synthetic pages the main-content tests feed to extract_main."""

from __future__ import annotations

from statecrawl.content.extract import parse_html
from statecrawl.content.maincontent import extract_main

#: ~190 chars of prose: a paragraph by every measure of the walk.
PROSE = (
    "The river rose through the night, and by morning the lower town was under water, "
    "with boats moving slowly between the houses, the bakery and the old market hall, "
    "where families waited."
)
NAV = "<nav><a href='/'>Home</a> <a href='/news'>News</a> <a href='/about'>About us</a></nav>"
FOOTER = "<footer><p>Copyright 2025 The Riverside Gazette. All rights reserved, everywhere.</p></footer>"


def main_of(html: str) -> str:
    """The whitespace-normalised text of what extract_main returns for ``html``."""
    root = parse_html(html)
    assert root is not None
    return " ".join(extract_main(root.find("body")).text_content().split())
