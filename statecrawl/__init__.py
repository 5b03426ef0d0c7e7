"""statecrawl: Scrapy with stateless workers and durable crawl state in Redis.

Enable everything in a Scrapy project with ``ADDONS = {"statecrawl.Addon": 0}``.
"""

from __future__ import annotations

from statecrawl.addon import Addon

__all__ = ["Addon"]
__version__ = "0.1.0"
