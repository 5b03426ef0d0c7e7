"""``statecrawl.Addon``: the whole framework with one line in ``ADDONS``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["Addon"]


class Addon:
    """Wire statecrawl's scheduler, dupefilter and pipelines into a crawler.

    ``ADDONS = {"statecrawl.Addon": 0}``. Each setting is set at ``addon``
    priority, so a project's own settings still win -- except, when
    ``STATECRAWL_NET_GUARD`` is on, the DNS resolver (see
    :func:`statecrawl.net.use_guarded_resolver`) and the browser's proxy in
    the launch options (:func:`statecrawl.net.use_guarded_browser`).
    """

    @classmethod
    def update_pre_crawler_settings(cls, settings: BaseSettings) -> None:
        # The net guard's resolver: Scrapy installs it on the reactor from the
        # process's settings, before any crawler (or its update_settings) exists.
        from statecrawl.net import use_guarded_resolver

        use_guarded_resolver(settings)

    def update_settings(self, settings: BaseSettings) -> None:
        settings.set("SCHEDULER", "statecrawl.scheduler.Scheduler", "addon")
        settings.set("DUPEFILTER_CLASS", "statecrawl.dupefilter.RedisDupeFilter", "addon")
        settings.set(
            "TWISTED_REACTOR", "twisted.internet.asyncioreactor.AsyncioSelectorReactor", "addon"
        )
        from scrapy.downloadermiddlewares.robotstxt import (
            RobotsTxtMiddleware as ScrapyRobots,
        )
        from scrapy.utils.misc import load_object

        from statecrawl.frontier.robots import RobotsTxtMiddleware
        from statecrawl.output.pipelines import MarkdownFiles, RedisItemStore, ServiceReplies

        # Scrapy 2.19's robots.txt middleware lets through the requests that
        # wait for robots.txt (see statecrawl.frontier.robots); ours replaces it.
        base = settings.getdict("DOWNLOADER_MIDDLEWARES_BASE")
        priority = next(v for k, v in base.items() if load_object(k) is ScrapyRobots)
        settings.set_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", ScrapyRobots, None)
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", RobotsTxtMiddleware, priority)

        # Rendering: scrapy-playwright's handler (plain HTTP unless a request
        # asks for the browser) and the middleware that decides per request.
        from statecrawl.render.browser import launch_options
        from statecrawl.render.middleware import RenderMiddleware

        handlers = settings.getdict("DOWNLOAD_HANDLERS")
        for scheme in ("http", "https"):
            handlers.setdefault(scheme, "statecrawl.browser.BrowserHandler")
        settings.set("DOWNLOAD_HANDLERS", handlers, "addon")
        settings.set("PLAYWRIGHT_LAUNCH_OPTIONS", launch_options(settings), "addon")
        settings.set("PLAYWRIGHT_ABORT_REQUEST", "statecrawl.browser.block_heavy_resources", "addon")
        settings.set("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT",
                     settings.getfloat("STATECRAWL_RENDER_TIMEOUT", 30.0) * 1000, "addon")
        settings.set("PLAYWRIGHT_MAX_PAGES_PER_CONTEXT",
                     settings.getint("STATECRAWL_RENDER_MAX_PAGES", 4), "addon")
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", RenderMiddleware, 950)
        # A browser that crashed or closed under a page fails it with
        # Playwright's Error: retried like a dropped connection.
        retry = settings.getlist("RETRY_EXCEPTIONS")
        if "playwright.async_api.Error" not in retry:
            settings.set("RETRY_EXCEPTIONS", [*retry, "playwright.async_api.Error"], "addon")

        # Sessions (issue 6): cookie jars in Redis in place of Scrapy's
        # in-memory ones (same priority), the crawl-wide login, the session
        # pool and proxies, pass-through cookies/headers (after the jar's
        # Cookie header is set), browser storage states (after rendering is
        # decided), and spider.state checkpoints.
        from scrapy.downloadermiddlewares.cookies import (
            CookiesMiddleware as ScrapyCookies,
        )

        from statecrawl.sessions.browser_state import BrowserSessionMiddleware
        from statecrawl.sessions.checkpoint import SpiderStateCheckpoint
        from statecrawl.sessions.cookies import RedisCookiesMiddleware
        from statecrawl.sessions.login import LoginMiddleware
        from statecrawl.sessions.passthrough import PassThroughMiddleware
        from statecrawl.sessions.pool import SessionMiddleware
        from statecrawl.sessions.tickets import ServiceTicketMiddleware

        cookies = next(v for k, v in base.items() if load_object(k) is ScrapyCookies)
        settings.set_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", ScrapyCookies, None)
        for component, order in ((LoginMiddleware, cookies - 30), (SessionMiddleware, cookies - 20),
                                 (RedisCookiesMiddleware, cookies),
                                 (PassThroughMiddleware, cookies + 10),
                                 (ServiceTicketMiddleware, cookies + 15),
                                 (BrowserSessionMiddleware, 960)):
            settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", component, order)
        settings.setdefault_in_component_priority_dict("EXTENSIONS", SpiderStateCheckpoint, 500)

        # The net guard's report and fail-safe (inactive unless STATECRAWL_NET_GUARD):
        # just above RetryMiddleware, so a refused address is not retried. With the
        # guard on, Chromium connects only through the guard's proxy (launch options),
        # and a browser context's own proxy is relayed through it (after the sessions').
        from statecrawl.net import (
            MIDDLEWARE_PRIORITY,
            RELAY_PRIORITY,
            BrowserProxyRelay,
            NetGuardMiddleware,
            use_guarded_browser,
        )

        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", NetGuardMiddleware, MIDDLEWARE_PRIORITY)
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", BrowserProxyRelay, RELAY_PRIORITY)
        use_guarded_browser(settings)

        # Kept where a project already lists them (with its own priority).
        # Service replies first: the others never see one (statecrawl.frontier.service).
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", ServiceReplies, 700)
        # API job pages (statecrawl.api.worker) go to their job, and no further.
        from statecrawl.api.worker import JobDocuments, SkipEndedJobs

        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", JobDocuments, 650)
        settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", SkipEndedJobs,
                                                       cookies + 16)
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", MarkdownFiles, 800)
        settings.setdefault_in_component_priority_dict("ITEM_PIPELINES", RedisItemStore, 900)

        # One politeness budget per host for the whole fleet (statecrawl.frontier.hosts):
        # DOWNLOAD_DELAY and AutoThrottle take their fleet-wide meaning, and the
        # middleware that holds each request until its slot sits last before the
        # downloader.
        from statecrawl.frontier.hosts import prepare_settings
        from statecrawl.frontier.politeness import PolitenessMiddleware

        prepare_settings(settings)
        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", PolitenessMiddleware, 990)

        # Rolling counters (statecrawl.frontier.rolling): every fetch attempt's status, bytes,
        # latency and host, into the crawl's 10-second buckets with the next commit.
        from statecrawl.frontier.rolling import RollingCounters

        settings.setdefault_in_component_priority_dict(
            "DOWNLOADER_MIDDLEWARES", RollingCounters, 960)

        # STATECRAWL_FINISHED_TTL: a starting worker purges crawls finished longer ago
        # (statecrawl.frontier.lifecycle); off (NotConfigured) by default.
        from statecrawl.frontier.sweep import FinishedSweep

        settings.setdefault_in_component_priority_dict("EXTENSIONS", FinishedSweep, 500)
