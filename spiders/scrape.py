"""``scrapy crawl scrape``: the API's single-page scrapes, served by a long-running worker.

The spider itself is statecrawl's (:mod:`statecrawl.spiders.scrape`); this is
the project's ``scrape``, as is.
"""

from __future__ import annotations

from statecrawl.spiders.scrape import ScrapeSpider as _ScrapeSpider

__all__ = ["ScrapeSpider"]


class ScrapeSpider(_ScrapeSpider):
    __doc__ = _ScrapeSpider.__doc__
