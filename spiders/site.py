"""``scrapy crawl site -a url=URL``: every page of one site as Markdown + JSON.

The spider itself is statecrawl's (:mod:`statecrawl.spiders.site`), so that
``statecrawl crawl`` has it wherever statecrawl is installed; this is the
project's ``site``, as is. Its arguments are listed there and in the README.
"""

from __future__ import annotations

from statecrawl.spiders.site import SiteSpider as _SiteSpider

__all__ = ["SiteSpider"]


class SiteSpider(_SiteSpider):
    __doc__ = _SiteSpider.__doc__
