"""Tests for statecrawl.extract: the never-failing parse and page metadata with its fallbacks."""

from __future__ import annotations

import logging

import pytest

import statecrawl.extract
from statecrawl.extract import normalize_space, page_metadata, parse_html

URL = "https://example.com/page"
NOTHING = {"title": None, "description": None, "language": None}


def test_primary_sources_whitespace_normalised() -> None:
    html = """<html lang=" en-GB "><head><title>  My
        page&nbsp;title </title>
        <meta name="description" content="  A   short
        description. ">
        <meta property="og:title" content="OG title">
        <meta property="og:description" content="OG description">
        </head><body><h1>Heading</h1></body></html>"""
    assert page_metadata(html, URL) == {
        "title": "My page title",
        "description": "A short description.",
        "language": "en-GB",
    }


def test_fallbacks_to_open_graph_and_content_language() -> None:
    html = """<html><head><title> </title>
        <meta property="og:title" content="OG &amp; title">
        <meta property="og:description" content="OG description">
        <meta http-equiv="Content-Language" content="de-AT, en">
        </head><body><h1>Heading</h1></body></html>"""
    assert page_metadata(html, URL) == {
        "title": "OG & title",
        "description": "OG description",
        "language": "de-AT",
    }


def test_title_falls_back_to_first_non_empty_h1() -> None:
    html = "<body><h1> </h1><h1>First <em>real</em>\n heading</h1><h1>Second</h1></body>"
    assert page_metadata(html, URL) == {
        "title": "First real heading",
        "description": None,
        "language": None,
    }


def test_meta_keys_are_case_insensitive_and_og_in_name_is_accepted() -> None:
    html = """<head><META NAME="Description" CONTENT="Upper">
        <meta name="og:title" content="Named OG"></head>"""
    assert page_metadata(html, URL) == {"title": "Named OG", "description": "Upper", "language": None}


def test_empty_meta_content_is_skipped_and_svg_title_ignored() -> None:
    html = """<head><meta name="description" content="  ">
        <meta name="description" content="Second"></head>
        <body><svg><title>icon</title></svg><h1>Real</h1></body>"""
    assert page_metadata(html, URL) == {"title": "Real", "description": "Second", "language": None}


def test_xml_lang_is_read() -> None:
    html = '<html xml:lang="fr"><body><p>x</p></body></html>'
    assert page_metadata(html, URL)["language"] == "fr"


@pytest.mark.parametrize(
    "html",
    ["", "   ", "\x00\x01\xff garbage <<<>>>", "<script>x()</script>", "<p>no metadata</p>", "\ud800"],
)
def test_pages_without_metadata_give_nones(html: str) -> None:
    assert page_metadata(html, URL) == NOTHING


def test_failure_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(root: object) -> object:
        raise RuntimeError("metadata exploded")

    monkeypatch.setattr(statecrawl.extract, "_metadata", boom)
    with caplog.at_level(logging.WARNING, logger="statecrawl.extract"):
        assert page_metadata("<title>x</title>", URL) == NOTHING
    assert f"Metadata extraction failed for {URL}" in caplog.text


def test_parse_html_returns_none_for_nothing_and_a_tree_otherwise() -> None:
    assert parse_html("") is None
    assert parse_html(" \n ") is None
    root = parse_html("<?xml version='1.0' encoding='latin-1'?><p>caf\u00e9\x00</p>")
    assert root is not None
    assert root.tag == "html"
    assert root.findtext("body/p") == "caf\u00e9"


def test_normalize_space() -> None:
    assert normalize_space(None) is None
    assert normalize_space(" \u00a0\n") is None
    assert normalize_space(" a \u00a0 b\n\tc ") == "a b c"
