"""Tests for statecrawl.content.maincontent: which text extract_main keeps and which it drops.

Each page is a small synthetic case of a failure seen on the benchmarks
(bench/markdown.py): the text assertions are exact, on the words kept.
"""

from __future__ import annotations

from statecrawl.content.extract import parse_html
from statecrawl.content.maincontent import extract_main
from tests.content._pages import FOOTER, NAV, PROSE, main_of


def paragraphs(label: str, count: int) -> str:
    return "".join(f"<p>{label} {n}. {PROSE}</p>" for n in range(count))


def test_content_in_a_hidden_stream_chunk_is_kept_and_unhidden() -> None:
    # React streaming: the server sends the page in <div hidden id="S:1">, a script swaps it in.
    chunk = f"<div hidden id='S:1'><article>{paragraphs('Flood', 3)}</article></div>"
    html = f"<html><body><main></main>{chunk}</body></html>"
    root = parse_html(html)
    assert root is not None
    content = extract_main(root.find("body"))
    text = " ".join(content.text_content().split())
    assert text.count("The river rose") == 3
    assert not [el for el in content.iter() if el.get("hidden") is not None]  # a converter would skip it


def test_folded_panels_of_the_content_stay_hidden_menus_and_lone_paragraphs_go() -> None:
    panel = "Dimensions: 120 x 80 x 75 cm. Weight: 32 kg. Frame: powder-coated steel, oak veneer top."
    html = f"""<html><body>{NAV}<main><article><h1>Oak desk</h1>{paragraphs('Desk', 2)}
      <div class="tab-panel" hidden><p>{panel} Assembly takes twenty minutes.</p></div>
      <ul class="tab-links" style="display:none"><li><a href="/a">Accessories and spare parts</a></li>
        <li><a href="/b">Other desks from the same maker</a></li><li><a href="/c">Gift cards</a></li></ul>
      <p hidden>Internal note: this paragraph is never shown to anyone on the page.</p>
    </article></main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert panel in text
    assert "Accessories" not in text
    assert "Internal note" not in text
    assert "Copyright" not in text


def test_teaser_cards_that_are_the_content_are_not_pruned_as_link_lists() -> None:
    cards = "".join(
        f"<div class='card'><h3><a href='/s/{n}'>Story number {n} about the flood, the long "
        f"clean-up after it and what the town will do next time</a></h3><p>Excerpt {n}: volunteers "
        f"and council crews worked through the weekend, clearing mud from cellars and shops while "
        f"the insurers counted the cost.</p></div>"
        for n in range(8)
    )
    html = f"<html><body>{NAV}<main><section class='latest'>{cards}</section></main>{FOOTER}</body></html>"
    text = main_of(html)
    assert [n for n in range(8) if f"Excerpt {n}:" in text and f"Story number {n} " in text] == list(range(8))


def test_content_wrapped_in_chrome_named_sections_falls_back_to_the_page() -> None:
    # "skip-item" holds the chrome word "skip"; each section alone holds too little to be spared.
    sections = "".join(
        f"<div id='topic{n}' class='skip-item'><h2>Topic {n}</h2><p>Topic {n}: {PROSE}</p></div>"
        for n in range(5)
    )
    html = f"<html><body>{NAV}<div class='blog-single'>{sections}</div>{FOOTER}</body></html>"
    text = main_of(html)
    assert [n for n in range(5) if f"Topic {n}: The river rose" in text] == list(range(5))
    assert "About us" not in text
    assert "Copyright" not in text


def test_a_cookie_notice_is_not_the_content_of_a_product_grid() -> None:
    notice = (
        "<div class='cookie-consent'><p>We use cookies to offer you the best shopping experience, "
        "with suitable offers, personalised ads and remembered preferences. Agree to continue.</p></div>"
    )
    grid = "".join(
        f"<li><a href='/p/{n}'>Headphones model {n}</a> <span>Closed-back</span></li>" for n in range(30)
    )
    results = f"<main><div class='search-results'><ul>{grid}</ul></div></main>"
    html = f"<html><body>{notice}{NAV}{results}</body></html>"
    text = main_of(html)
    assert [n for n in range(30) if f"Headphones model {n} " in text] == list(range(30))


def test_a_page_with_visible_text_never_comes_out_empty() -> None:
    html = (
        f"<html><body>{NAV}<div class='sidebar-widget'>"
        "<p>Opening hours: Monday to Friday, nine to five, closed on public holidays.</p></div></body></html>"
    )
    assert main_of(html) == "Opening hours: Monday to Friday, nine to five, closed on public holidays."


def test_growth_stops_at_main_teasers_beside_it_stay_out() -> None:
    teasers = "".join(
        f"<li><h5><a href='/t/{n}'>Other story {n}</a></h5><p>Teaser {n}. {PROSE}</p></li>"
        for n in range(6)
    )
    html = f"""<html><body>{NAV}<main><article><h1>Flood</h1>{paragraphs('Flood', 3)}</article></main>
      <div class='below'><ul>{teasers}</ul></div>{FOOTER}</body></html>"""
    text = main_of(html)
    assert text.count("Flood ") == 3
    assert "Teaser" not in text
    assert "Other story" not in text


def test_captions_credits_galleries_and_bylines_are_pruned_from_an_article() -> None:
    html = f"""<html><body><main><article><h1>Flood</h1>
      <div class="byline">By Ann Reporter, Staff writer</div>
      <div class="asset_gallery"><ul><li><img src="/1.jpg" alt="">
        <div class="caption"><p>Boats between the houses of the lower town on Tuesday morning,
          seen from the bridge.</p></div></li></ul></div>
      {paragraphs('Flood', 4)}
      <p class="photo-credit">Photo: Hau Dinh, AP</p>
    </article></main></body></html>"""
    text = main_of(html)
    assert text.count("The river rose") == 4
    for gone in ("Ann Reporter", "Boats between", "Hau Dinh"):
        assert gone not in text


def test_a_core_found_in_the_footer_is_found_again_outside_it() -> None:
    legal = "".join(f"<p>Disclosure {n}. {PROSE} {PROSE}</p>" for n in range(4))
    html = f"""<html><body>{NAV}<main><h1>Pet insurance</h1>
      <p>Help protect your pet and your budget from unexpected vet bills, with cover from the first day.</p>
      <p>{PROSE}</p></main><footer><div class="disclosures">{legal}</div></footer></body></html>"""
    text = main_of(html)
    assert "Help protect your pet" in text
    assert "Disclosure" not in text


def test_spared_chrome_without_a_class_is_not_kin_of_the_core() -> None:
    # A consent centre holding more paragraph text than the thread is spared at first; a
    # classless <div> must not pass for "a sibling post of the same kind" as the core's wrappers.
    consent = "".join(f"<p>Consent purpose {n}. {PROSE}</p>" for n in range(3))
    html = f"""<html><body><div><div><article>{paragraphs('Post', 4)}</article></div></div>
      <div id="onetrust-consent-sdk">{consent}</div></body></html>"""
    text = main_of(html)
    assert [n for n in range(4) if f"Post {n}. The river" in text] == [0, 1, 2, 3]
    assert "Consent purpose" not in text


def test_spared_chrome_beside_the_core_does_not_make_it_grow() -> None:
    # The promo box holds half the paragraph text, so it is spared; it must not count
    # towards the share of the page the core grows to cover, or the core climbs to <body>.
    promo = "".join(f"<p>Offer {n}. {PROSE}</p>" for n in range(4))
    html = f"""<html><body><div class="column"><article>{paragraphs('Story', 5)}</article>
      <div class="note"><p>Note. {PROSE}</p></div></div><div class="promo">{promo}</div></body></html>"""
    text = main_of(html)
    assert [n for n in range(5) if f"Story {n}. The river" in text] == [0, 1, 2, 3, 4]
    assert "Note." not in text
    assert "Offer" not in text


def test_a_wrapper_named_like_a_byline_that_holds_the_text_is_kept() -> None:
    html = f"""<html><body><main><article><h1>Flood</h1>
      <div class="story-text">{paragraphs('Story', 2)}</div>
      <div class="author-notes">{paragraphs('Notes', 3)}</div>
      <ul>{"".join(f"<li>Gauge {n}: 4.2 m</li>" for n in range(24))}</ul>
    </article></main></body></html>"""
    text = main_of(html)
    assert [n for n in range(3) if f"Notes {n}. The river" in text] == [0, 1, 2]
    assert "Gauge 23: 4.2 m" in text


def test_related_posts_in_the_articles_own_markup_go_by_their_heading() -> None:
    # WordPress themes wrap "you may like" teasers in the same <article class="post">
    # as the article, with full paragraphs; only the heading's name tells them apart.
    teasers = "".join(f"<article class='post'><p>Teaser {n}. {PROSE}</p></article>" for n in range(4))
    html = f"""<html><body>{NAV}<div id="primary">
      <article class="post"><h1>Only the one who loves</h1><p>Story. {PROSE}</p></article>
      <article class="post"><h3 class="relatedpoststitle">Você pode gostar...</h3>{teasers}</article>
      </div>{FOOTER}</body></html>"""
    text = main_of(html)
    assert "Story. The river rose" in text
    assert "Teaser" not in text


def test_loose_text_in_a_div_is_a_paragraph_of_that_div() -> None:
    # The article's text sits loose after an image, between <br>s: it must score its own
    # <div>, not only the link-heavy column around it, or a short footer note wins.
    categories = "".join(f"<li><a href='/c/{n}'>Category {n}</a></li>" for n in range(80))
    html = f"""<html><body><div class="row"><div class="col-3"><ul>{categories}</ul></div>
      <div class="col-9"><p class="title">Vehicles broken into</p>
      <small><a href="/c/1">Health</a></small><br><br><img src="/a.jpg" alt="">Loose. {PROSE} {PROSE}<br><br>
      </div></div><div class="rodape"><div class="col"><p>Town hall, Main Square 1, open on weekdays
      from nine in the morning to five in the afternoon.</p></div></div>
      </body></html>"""
    text = main_of(html)
    assert "Loose. The river rose" in text
    assert "Town hall" not in text
    assert "Category 7" not in text


def test_a_long_comment_does_not_take_the_place_of_the_article() -> None:
    # The comment outscores the article, but the thread is not most of the page's text
    # (statecrawl.content._thread would then take it for a forum thread).
    comment = "".join(f"<p>Reply {n}. {PROSE}</p>" for n in range(4))
    html = f"""<html><body>{NAV}<div class="wrapper"><div class="article"><h1>Keyboards</h1>
      {paragraphs('Report', 3)}</div>
      <div id="comments"><div class="comment first"><div class="text">{comment}</div></div></div>
      </div>{FOOTER}</body></html>"""
    text = main_of(html)
    assert "Report 1. The river rose" in text
    assert "Reply" not in text


def test_a_thread_whose_posts_are_all_comments_keeps_them() -> None:
    posts = "".join(f"<div class='comment'><p>Post {n}. {PROSE}</p></div>" for n in range(4))
    html = f"""<html><body>{NAV}<h1>Which telescope first?</h1><div id="comments">{posts}</div>{FOOTER}</body></html>"""
    text = main_of(html)
    assert [n for n in range(4) if f"Post {n}. The river" in text] == [0, 1, 2, 3]
