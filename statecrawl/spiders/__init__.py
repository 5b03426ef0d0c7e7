"""statecrawl's spiders: ``site`` (every page of one site), the spider of ``statecrawl crawl``,
and ``scrape`` (the API's single-page scrapes, served by ``statecrawl worker --serve-scrapes``).

Loaded by :mod:`statecrawl.cli.worker_settings` (``SPIDER_MODULES``); the
repository's Scrapy project has them as ``spiders/site.py`` and ``spiders/scrape.py``.
"""
