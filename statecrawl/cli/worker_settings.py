"""Scrapy settings of the workers ``statecrawl crawl`` and ``statecrawl worker`` start.

The CLI runs each worker as ``python -m scrapy crawl site`` with
``SCRAPY_SETTINGS_MODULE=statecrawl.cli.worker_settings`` (unless that variable
is already set in its environment, which then wins), so the command works
wherever statecrawl is installed, inside a Scrapy project or not. The
project in statecrawl's repository (``settings/base.py``) starts from these
same values. Secrets (the Redis URL and its password) come only from the
environment, never from here.
"""

from __future__ import annotations

import os

BOT_NAME = "statecrawl"
SPIDER_MODULES = ["statecrawl.spiders"]

ADDONS = {"statecrawl.Addon": 0}

ROBOTSTXT_OBEY = True
USER_AGENT = "statecrawl/0.1 (+https://github.com/statecrawl/statecrawl)"
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16
DOWNLOAD_TIMEOUT = 30
RETRY_TIMES = 2
# Off-site redirects are not followed; statecrawl makes an item saying so.
REDIRECT_MAX_TIMES = 10
HTTPERROR_ALLOW_ALL = False
AUTOTHROTTLE_ENABLED = False

# Outputs: Markdown files and a JSON Lines feed under STATECRAWL_OUTPUT_DIR.
STATECRAWL_OUTPUT_DIR = os.environ.get("STATECRAWL_OUTPUT_DIR", "output")
FEEDS = {
    f"{STATECRAWL_OUTPUT_DIR}/pages-%(crawl_id)s-%(batch_time)s.jsonl": {
        "format": "jsonlines", "encoding": "utf8",
    },
}
FEED_URI_PARAMS = "statecrawl.output.feeds.uri_params"
LOG_LEVEL = "INFO"

# The net guard (statecrawl.net), from the environment: scrape workers run with it on
# (statecrawl worker --serve-scrapes sets STATECRAWL_NET_GUARD=true).
STATECRAWL_NET_GUARD = os.environ.get("STATECRAWL_NET_GUARD", "").strip().lower() in ("1", "true", "yes", "on")
STATECRAWL_NET_ALLOW = os.environ.get("STATECRAWL_NET_ALLOW", "")
# Purge crawls finished longer ago than this many seconds (0: keep them), as `statecrawl list` does.
STATECRAWL_FINISHED_TTL = os.environ.get("STATECRAWL_FINISHED_TTL", "0")
