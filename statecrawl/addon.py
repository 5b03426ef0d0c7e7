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
        from statecrawl.pipelines import MarkdownFiles, RedisItemStore

        # Kept where a project already lists them (with its own priority).
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", MarkdownFiles, 800)
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", RedisItemStore, 900)
