"""statecrawl's spiders: ``site`` (every page of one site), the spider of ``statecrawl crawl``.

Loaded by :mod:`statecrawl.cli.worker_settings` (``SPIDER_MODULES``); the
repository's Scrapy project has it as ``spiders/site.py``.
"""
