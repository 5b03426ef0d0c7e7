"""Tests for statecrawl.content._thread: chrome-named blocks that are the page's content.

Each page is synthetic: a comment thread that is the page (a forum), the
reader comments of an article (not content), the repeated sections of a
service page whose class carries a chrome word, and pop-ups that do not
count however much text they hold.
"""

from __future__ import annotations

import pytest

from tests.content._pages import NAV, PROSE, main_of

SIDEBAR = (
    "<div class='sidebar'><p>Popular this week: the best boots for winter walks, and where to "
    "buy them cheaply before the season.</p></div>"
)


def post(n: int, extra: str = "") -> str:
    """A comment of a thread: author, text (in a reply form, as some forums serve it), share bar."""
    return (
        f"<li class='comment depth-1' id='comment-{n}'><div class='comment-author'>user{n}</div>"
        f"<form class='usertext'><div class='md'><p>Reply {n}. {PROSE}</p></div></form>"
        f"<div class='share'><a href='/s/{n}'>Share this comment with a friend</a></div>{extra}</li>"
    )


def test_a_thread_of_comments_that_is_the_page_is_kept_whole() -> None:
    # Each post alone holds a tenth of the page: stripped one by one as chrome, the thread went.
    thread = "".join(post(n) for n in range(8))
    html = f"""<html><body>{NAV}<div class='page'><h1>Which boots for the Alps?</h1>
      <div class='link-post'><p>Question: {PROSE}</p></div>
      <ul class='comments'>{thread}</ul></div>{SIDEBAR}</body></html>"""
    text = main_of(html)
    assert text.count("The river rose") == 9  # the question and every reply
    assert all(f"Reply {n}." in text for n in range(8))
    assert "Share this comment" not in text  # chrome inside a post, holding little of it
    assert "Popular this week" not in text
    assert "About us" not in text


def test_nested_replies_keep_their_text() -> None:
    # A reply's text is judged against its own post, not the post with all its replies.
    nested = post(10, extra=f"<ul class='children'>{post(11, extra=f'<ul>{post(12)}</ul>')}</ul>")
    thread = nested + "".join(post(n) for n in range(10))
    html = f"<html><body>{NAV}<div class='thread'><ul class='comments'>{thread}</ul></div>{SIDEBAR}</body></html>"
    text = main_of(html)
    assert all(f"Reply {n}." in text for n in (10, 11, 12, *range(10)))


def test_reader_comments_of_an_article_go() -> None:
    article = "".join(f"<p>Part {n}. {PROSE}</p>" for n in range(4))
    comments = "".join(f"<li class='comment'><p>Comment {n}. {PROSE}</p></li>" for n in range(3))
    html = f"""<html><body>{NAV}<div class='main'><article><h1>Floods</h1>{article}</article>
      <div id='comments'><ol class='comment-list'>{comments}</ol></div></div></body></html>"""
    text = main_of(html)
    assert "Part 3." in text
    assert "Comment 0." not in text


@pytest.mark.parametrize(
    ("head", "article"),
    [
        ("", "<article class='post hentry'>"),  # hAtom entry (WordPress)
        ("", "<article class='fhitem story'>"),  # the page's <article> calls itself a story
        ('<script type="application/ld+json">{"@type": "NewsArticle"}</script>', "<article>"),
    ],
)
def test_a_story_or_blog_post_keeps_its_comments_out_however_long(head: str, article: str) -> None:
    # More comment text than article text, but the page says it is an article.
    comments = "".join(f"<li class='comment'><p>Comment {n}. {PROSE}</p></li>" for n in range(12))
    html = f"""<html><head>{head}</head><body>{NAV}<div class='main'>{article}<h1>Floods</h1>
      <p>Part 1. {PROSE}</p><p>Part 2. {PROSE}</p></article>
      <div id='comments'><ol class='comment-list'>{comments}</ol></div></div></body></html>"""
    text = main_of(html)
    assert "Part 2." in text
    assert "Comment 0." not in text


def test_repeated_sections_named_like_chrome_are_the_page() -> None:
    # Sections named for the scroll-spy nav they feed: each a chrome block, together the page.
    sections = "".join(
        f"<div class='feature-{n} lm_navSource'><h2>Feature {n}</h2><p>Feature {n}. {PROSE}</p></div>"
        for n in range(5)
    )
    html = f"""<html><body>{NAV}<main><div class='intro'><h1>Our service</h1><p>Intro. {PROSE}</p>
      <p>More. {PROSE}</p></div>{sections}</main></body></html>"""
    text = main_of(html)
    assert "Intro." in text
    assert all(f"Feature {n}." in text for n in range(5))
    assert "About us" not in text


def test_repeated_pop_ups_are_never_content() -> None:
    popups = "".join(
        f"<div class='elementor-popup offer-{n}'><p>Offer {n}. {PROSE}</p></div>" for n in range(6)
    )
    html = f"""<html><body>{NAV}<main><h1>Resume writing</h1><p>Plans. {PROSE}</p>
      <p>Prices. {PROSE}</p></main>{popups}</body></html>"""
    text = main_of(html)
    assert "Plans." in text and "Prices." in text
    assert "Offer 0." not in text


def test_the_question_above_a_long_answer_joins_it() -> None:
    # The long answer alone holds most of the page's text: the content grew no further.
    def post_cell(label: str, count: int, by: str) -> str:
        paras = "".join(f"<p>{label} {n}. {PROSE}</p>" for n in range(count))
        return f"<div class='postcell'><div class='s-prose js-post-body'>{paras}</div><div>{by}</div></div>"

    html = f"""<html><body>{NAV}<div id='content'><div id='mainbar'>
      <div id='question'><h1>Why did the river rise?</h1>{post_cell('Question', 1, 'asked by ann')}</div>
      <div id='answers'><div class='answer'>{post_cell('Answer', 8, 'answered by bob')}</div>
        <div class='answer'>{post_cell('Short', 1, 'answered by cy')}</div></div></div>
      <div class='links'><a href='/q/1'>Related question one</a> <a href='/q/2'>Related question two</a>
      <a href='/q/3'>Related question three</a></div></div></body></html>"""
    text = main_of(html)
    assert "Question 0." in text
    assert "Answer 7." in text and "Short 0." in text
    assert "Related question" not in text
