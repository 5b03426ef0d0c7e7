"""``STATECRAWL_MARKDOWN_IMAGES``: the site spider passes it to ``to_markdown``, and checks it."""

from __future__ import annotations

import pytest
from scrapy.http import HtmlResponse, Request
from scrapy.utils.test import get_crawler

from statecrawl.exceptions import ConfigError
from statecrawl.output.items import Page
from statecrawl.spiders.site import SiteSpider

URL = "https://example.com/a.html"
BODY = (b"<html><body><main><p>Text of the page.</p><img src='/chart.png' alt='Chart'>"
        b" <img src='/photo.jpg'></main></body></html>")


def markdown(settings: dict[str, str]) -> str:
    crawler = get_crawler(SiteSpider, settings)
    spider = SiteSpider.from_crawler(crawler, url=URL)
    response = HtmlResponse(URL, body=BODY, encoding="utf-8", request=Request(URL),
                            headers={"Content-Type": "text/html; charset=utf-8"})
    pages = [item for item in spider.parse(response) if isinstance(item, Page)]
    return pages[0].markdown


@pytest.mark.parametrize(("setting", "expected"), [
    ({}, "Text of the page.\n\n![Chart](https://example.com/chart.png)"),
    ({"STATECRAWL_MARKDOWN_IMAGES": "alt"}, "Text of the page.\n\n![Chart](https://example.com/chart.png)"),
    ({"STATECRAWL_MARKDOWN_IMAGES": "ALL"},
     "Text of the page.\n\n![Chart](https://example.com/chart.png) ![](https://example.com/photo.jpg)"),
    ({"STATECRAWL_MARKDOWN_IMAGES": "none"}, "Text of the page."),
])
def test_setting_chooses_the_images_kept(setting: dict[str, str], expected: str) -> None:
    assert markdown(setting) == expected


def test_unknown_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="STATECRAWL_MARKDOWN_IMAGES must be one of alt, all, none"):
        SiteSpider.from_crawler(get_crawler(SiteSpider, {"STATECRAWL_MARKDOWN_IMAGES": "some"}), url=URL)
