"""Tests for the item lists of listing pages (statecrawl.content._listing) in extract_main.

Each page is a small synthetic case of a failure seen on the WCXB listing and
collection pages (bench/markdown.py): a search-results wrapper taken for
chrome, a core found in one teaser, SEO text chosen over a product grid, a
prose-less page given with its filters, a data table named ``sticky-header``.
"""

from __future__ import annotations

from tests.content._pages import FOOTER, NAV, PROSE, main_of


def products(count: int) -> str:
    """A shop grid: ``count`` cards of a linked name and a price."""
    cards = "".join(
        f"<li class='product-card'><a href='/p/{n}'>Solid oak writing desk, model {n}</a>"
        f"<span class='price'>$1{n}9.00</span></li>"
        for n in range(count)
    )
    return f"<ul class='product-grid'>{cards}</ul>"


def test_a_search_results_wrapper_is_content_not_chrome() -> None:
    # "search" is a chrome word (search boxes); "search-results" holds the page's results.
    items = "".join(
        f"<li class='result'><a href='/r/{n}'>Flood defences in the lower town, part {n}</a>"
        f"<p>Report on the dykes and pumps, page {n}.</p></li>"
        for n in range(3)
    )
    html = f"""<html><body>{NAV}<div class="search-box"><a href="/s">Advanced search</a></div>
      <main><h1>Results for flood</h1><ul class="search-results">{items}</ul></main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert "Flood defences in the lower town, part 2" in text
    assert "Report on the dykes and pumps, page 0." in text
    assert "Advanced search" not in text
    assert "Copyright" not in text


def test_a_core_found_in_one_teaser_widens_to_the_whole_list() -> None:
    # One teaser has a long excerpt, the others only a headline: the list is the content.
    long = (
        "<article class='teaser'><a href='/s/lead'>The lower town under water: a night of rising river</a>"
        f"<p>{PROSE}</p><p>{PROSE}</p></article>"
    )
    short = "".join(
        f"<article class='teaser'><a href='/s/{n}'>Headline of a shorter story from the river, number {n}</a>"
        f"<span>May {n}</span></article>"
        for n in range(8)
    )
    html = f"""<html><body>{NAV}<main><h1>Latest news</h1>
      <div class="river">{long}{short}</div></main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert text.count("The river rose") == 2
    assert "Headline of a shorter story from the river, number 0" in text
    assert "Headline of a shorter story from the river, number 7" in text
    assert "About us" not in text
    assert "Copyright" not in text


def test_a_product_grid_bigger_than_the_seo_text_beside_it_joins_it() -> None:
    # Readability picks the category's SEO text; the grid of short linked cards has no paragraph.
    html = f"""<html><body>{NAV}<main><h1>Writing desks</h1>{products(20)}
      <div class="category-text"><p>{PROSE}</p><p>{PROSE}</p></div></main>
      <div class="newsletter-box"><p>Sign up for our letters and get ten percent off today.</p></div>
      {FOOTER}</body></html>"""
    text = main_of(html)
    assert "Solid oak writing desk, model 0" in text
    assert "Solid oak writing desk, model 19" in text
    assert "$1199.00" in text
    assert text.count("The river rose") == 2
    assert "Sign up" not in text
    assert "Copyright" not in text


def test_a_page_without_prose_is_its_product_list_with_heading_not_the_filters() -> None:
    facets = "".join(f"<li><a href='/f/{n}'>Filter by wood species number {n}</a></li>" for n in range(12))
    html = f"""<html><body>{NAV}<main>
      <div class="facets"><ul>{facets}</ul></div>
      <div class="listing"><h1>Writing desks</h1><p>Solid oak desks, made to order in our workshop.</p>
        <p>12 results</p>{products(12)}</div>
    </main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert text.startswith("Writing desks")
    assert "Solid oak desks, made to order in our workshop." in text
    assert "12 results" in text
    assert "Solid oak writing desk, model 11" in text
    assert "Filter by wood species" not in text
    assert "Copyright" not in text


def test_a_menu_is_no_item_list_and_an_article_keeps_its_sections() -> None:
    # All links (a menu) or mostly prose (an article's sections): neither widens nor narrows the content.
    menu = "".join(f"<li class='entry'><a href='/m/{n}'>Section of the site number {n}</a></li>" for n in range(12))
    sections = "".join(
        f"<section class='part'><h2><a href='#p{n}'>Part {n}</a></h2><p>{PROSE}</p></section>" for n in range(5)
    )
    html = f"""<html><body><div class="top"><ul class="links">{menu}</ul></div>
      <main><article><h1>The flood</h1>{sections}</article></main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert text.count("The river rose") == 5
    assert text.startswith("The flood")
    assert "Section of the site" not in text


def test_a_table_named_sticky_header_is_content_not_the_page_banner() -> None:
    # "header" is a chrome word (site-header); on a table it names the table's own head row.
    rows = "".join(f"<tr><td>{1901 + n}</td><td>Laureate {n}</td></tr>" for n in range(30))
    html = f"""<html><body>{NAV}<main><h1>List of laureates</h1><p>{PROSE}</p>
      <table class="wikitable sortable sticky-header"><thead><tr><th>Year</th><th>Name</th></tr></thead>
      <tbody>{rows}</tbody></table>
      <div class="site-header-promo"><p>Subscribe to our letters today, it only takes a minute.</p></div>
    </main>{FOOTER}</body></html>"""
    text = main_of(html)
    assert "Laureate 29" in text
    assert "Year" in text
    assert "Subscribe" not in text
