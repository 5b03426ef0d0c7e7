"""``statecrawl.Addon``: the whole framework with one line in ``ADDONS``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["Addon"]


class Addon:
    """Wire statecrawl's scheduler, dupefilter and pipelines into a crawler.

    ``ADDONS = {"statecrawl.Addon": 0}``. Each setting is set at ``addon``
    priority, so a project's own settings still win.
    """

    def update_settings(self, settings: BaseSettings) -> None:
        settings.set("SCHEDULER", "statecrawl.scheduler.Scheduler", "addon")
        settings.set("DUPEFILTER_CLASS", "statecrawl.dupefilter.RedisDupeFilter", "addon")
        settings.set(
            "TWISTED_REACTOR", "twisted.internet.asyncioreactor.AsyncioSelectorReactor", "addon"
        )
        from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobots
        from scrapy.utils.misc import load_object

        from statecrawl.pipelines import MarkdownFiles, RedisItemStore
        from statecrawl.robots import RobotsTxtMiddleware

        # Scrapy 2.19's robots.txt middleware lets through the requests that
        # wait for robots.txt (see statecrawl.robots); ours replaces it.
        base = settings.getdict("DOWNLOADER_MIDDLEWARES_BASE")
        priority = next(v for k, v in base.items() if load_object(k) is ScrapyRobots)
        settings.set_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", ScrapyRobots, None)
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", RobotsTxtMiddleware, priority)

        # Kept where a project already lists them (with its own priority).
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", MarkdownFiles, 800)
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", RedisItemStore, 900)
