"""Tests for statecrawl.content._product: what extract_main drops from product pages, and repeats.

Each page is a small synthetic case of a failure seen on the WCXB product
pages (bench/markdown.py): reviews holding more prose than the description,
recommendation carousels, "customers also viewed" strips, responsive copies.
"""

from __future__ import annotations

from statecrawl.content.extract import parse_html
from statecrawl.content._product import is_product_page
from tests.content._pages import main_of

JSON_LD = '<script type="application/ld+json">{"@context": "https://schema.org", "@type": "Product"}</script>'
DESCRIPTION = (
    "<h1>Trail 25 pack</h1><div class='product-description'><p>A light daypack for long walks, "
    "with a padded back panel, two side pockets, a rain cover in the lid and room for a bladder, "
    "made from recycled nylon that shrugs off rain and brambles alike.</p></div>"
)
#: More of the product's own text: a recommendation strip beside it is under a quarter of the page.
DETAILS = "".join(
    f"<p>Detail {n}: the pack has a stiff frame sheet, a sternum strap with a whistle, and a lid that "
    "opens wide enough for a map, a phone and a spare pair of gloves on a cold morning.</p>"
    for n in range(6)
)
#: ~150 chars each: every review is a prose paragraph.
REVIEWS = "".join(
    f"<div class='review'><p>Review {n}: I took this pack on a week of hiking in the Alps, "
    "and it carried everything I needed, stayed dry in two storms, and never hurt my shoulders.</p></div>"
    for n in range(6)
)


def page(head: str, body: str) -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


def is_product(html: str) -> bool:
    root = parse_html(html)
    assert root is not None
    return is_product_page(root.find("body"))


def test_a_product_page_is_declared_or_sells() -> None:
    assert is_product(page(JSON_LD, "<p>Daypack</p>"))
    assert is_product(page('<meta property="og:type" content="product">', "<p>Daypack</p>"))
    assert is_product(page("", "<p>Daypack</p><button class='btn'>Add to cart</button>"))
    assert is_product(page("", "<p>Daypack</p><input type='submit' id='add-to-cart-button' value='Buy'>"))
    assert not is_product(page("", "<p>Daypack</p><button>Subscribe</button>"))
    # A buying guide declares itself an article, whatever products it marks up.
    assert not is_product(page(f'<meta property="og:type" content="article">{JSON_LD}', "<p>Daypack</p>"))


def test_reviews_go_from_a_product_page_though_they_hold_more_prose() -> None:
    body = f"<main>{DESCRIPTION}<section class='product-reviews'><h2>Reviews</h2>{REVIEWS}</section></main>"
    text = main_of(page(JSON_LD, body))
    assert "A light daypack for long walks" in text
    assert "Review 0" not in text
    assert "Review 5" not in text
    # The same page declared an article (a review round-up) keeps them.
    text = main_of(page('<meta property="og:type" content="article">', body))
    assert "Review 0" in text


def test_a_rating_summary_without_prose_stays() -> None:
    summary = "<div class='reviews-summary'><span>4.8 out of 5 stars</span> <span>Based on 120 reviews</span></div>"
    text = main_of(page(JSON_LD, f"<main>{DESCRIPTION.replace('<p>', summary + '<p>')}</main>"))
    assert "4.8 out of 5 stars" in text
    assert "A light daypack for long walks" in text


def test_recommendation_carousels_without_prose_go_feature_sliders_stay() -> None:
    tiles = "".join(
        f"<div class='tile'><span>Summit pack {n} with hip belt</span> <span>$12{n}.00</span>"
        f" <a href='/p/{n}'>View</a></div>"
        for n in range(8)
    )
    features = (
        "<div class='swiper'><h3>Back panel</h3><p>The back panel is cut from a single sheet of foam, so it "
        "stays comfortable and breathes on hot climbs, and it rinses clean in a minute under a tap "
        "after a long and muddy day out on the hills.</p></div>"
    )
    carousel = f"<div class='product-carousel'><h2>More packs</h2>{tiles}</div>"
    body = f"<main>{DESCRIPTION}{features}{carousel}{DETAILS}</main>"
    text = main_of(page(JSON_LD, body))
    assert "The back panel is cut from a single sheet of foam" in text
    assert "Summit pack" not in text
    assert "More packs" not in text


def test_the_section_under_a_recommendation_heading_goes() -> None:
    tiles = "".join(
        f"<li>Used daypack number {n}, good condition, $3{n} <a href='/i/{n}'>View</a></li>" for n in range(6)
    )
    body = (
        f"<main><div class='grid'><div><h2>People who viewed this item also viewed</h2><ul>{tiles}</ul></div></div>"
        f"{DESCRIPTION}{DETAILS}</main>"
    )
    text = main_of(page(JSON_LD, body))
    assert "A light daypack for long walks" in text
    assert "also viewed" not in text
    assert "Used daypack" not in text


def test_a_repeated_section_is_kept_once_short_repeats_and_code_stay() -> None:
    items = "".join(
        f"<li>Step {n}: fold the map along the marked line and keep it in the lid pocket.</li>" for n in range(12)
    )
    section = f"<div class='steps'><h2>Packing the lid</h2><ul>{items}</ul></div>"
    note = "<p>Always check the weather forecast before you leave, and tell someone where you are going today.</p>"
    fields = "".join(f"<li>field_{n}: one item of the packing list, with its weight in grams</li>" for n in range(10))
    lines = "\n".join(f"pack.add(item_{n}, weight={n * 100})" for n in range(16))
    example = f"<pre><code>pack = Pack(volume=25)\n{lines}\npack.fill()</code></pre>"
    code = f"<div class='example'>{example}<ul>{fields}</ul></div>"
    prose = "".join(
        f"<p>Part {n}. A good day on the hill starts the night before, with a pack that is light, "
        "sorted and ready by the door, so that nothing is forgotten in the dark.</p>"
        for n in range(4)
    )
    body = (
        f"<article><h1>How to pack a daypack</h1>{prose}"
        f"<div class='d-none d-md-block'>{section}</div><div class='d-md-none'>{section}</div>"
        f"{note}{code}{prose[:200]}{note}{code}</article>"
    )
    text = main_of(page("", body))
    assert text.count("Step 11: fold the map") == 1
    assert text.count("Always check the weather forecast") == 2
    assert text.count("pack.add(item_15, weight=1500)") == 2  # an example repeated in two sections
