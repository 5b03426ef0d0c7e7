"""How the add-on installs the guarded resolver and its middleware (settings only, no crawl).

The resolver's behaviour in crawls is in ``test_guard.py``.
"""

from __future__ import annotations

import pytest
from scrapy.addons import AddonManager
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import NotConfigured
from scrapy.settings import SETTINGS_PRIORITIES, Settings
from scrapy.utils.misc import load_object
from scrapy.utils.test import get_crawler

from statecrawl.exceptions import ConfigError
from statecrawl.net import GuardedResolver, NetGuardMiddleware

ADDONS = {"statecrawl.Addon": 0}


class MyGuardedResolver(GuardedResolver):
    """A project's own subclass: kept."""


def pre_crawler(settings: dict[str, object], priority: str = "project") -> Settings:
    """The process settings after the add-on's update_pre_crawler_settings (as CrawlerProcess runs it)."""
    s = Settings()
    s.setdict({"ADDONS": ADDONS, **settings}, priority)
    AddonManager.load_pre_crawler_settings(s)
    return s


def test_guard_off_leaves_the_resolver_alone() -> None:
    s = pre_crawler({})
    assert s["TWISTED_DNS_RESOLVER"] == "scrapy.resolver.CachingThreadedResolver"
    assert s.getpriority("TWISTED_DNS_RESOLVER") == SETTINGS_PRIORITIES["default"]


def test_guard_on_installs_the_guarded_resolver() -> None:
    s = pre_crawler({"STATECRAWL_NET_GUARD": "True"}, "cmdline")
    assert load_object(s["TWISTED_DNS_RESOLVER"]) is GuardedResolver


@pytest.mark.parametrize("resolver", ["scrapy.resolver.CachingThreadedResolver",
                                      "scrapy.resolver.CachingHostnameResolver"])
def test_scrapy_resolvers_set_by_a_project_are_replaced(resolver: str) -> None:
    s = pre_crawler({"STATECRAWL_NET_GUARD": True, "TWISTED_DNS_RESOLVER": resolver})
    assert load_object(s["TWISTED_DNS_RESOLVER"]) is GuardedResolver
    assert s.getpriority("TWISTED_DNS_RESOLVER") > SETTINGS_PRIORITIES["project"]


def test_deprecated_dns_resolver_setting_does_not_win() -> None:
    # Scrapy prefers DNS_RESOLVER when both have the same priority
    s = pre_crawler({"STATECRAWL_NET_GUARD": True, "DNS_RESOLVER": "scrapy.resolver.CachingThreadedResolver"},
                    "cmdline")
    assert s.getpriority("TWISTED_DNS_RESOLVER") > s.getpriority("DNS_RESOLVER")  # type: ignore[operator]
    assert load_object(s["TWISTED_DNS_RESOLVER"]) is GuardedResolver


def test_a_subclass_of_the_guarded_resolver_is_kept() -> None:
    path = f"{__name__}.MyGuardedResolver"
    s = pre_crawler({"STATECRAWL_NET_GUARD": True, "TWISTED_DNS_RESOLVER": path})
    assert s["TWISTED_DNS_RESOLVER"] == path


def test_another_resolver_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match=r"TWISTED_DNS_RESOLVER is set to 'twisted.internet.base."
                                          r"ThreadedResolver': remove TWISTED_DNS_RESOLVER"):
        pre_crawler({"STATECRAWL_NET_GUARD": True,
                     "TWISTED_DNS_RESOLVER": "twisted.internet.base.ThreadedResolver"})


def test_a_bad_allowlist_stops_the_process_before_it_crawls() -> None:
    with pytest.raises(ConfigError, match="'localhost:8080' is neither a host name"):
        pre_crawler({"STATECRAWL_NET_GUARD": True, "STATECRAWL_NET_ALLOW": "10.0.0.0/8,localhost:8080"})


def test_the_middleware_sits_just_above_retry_and_is_off_by_default() -> None:
    crawler = get_crawler(settings_dict={"ADDONS": ADDONS, "STATECRAWL_NET_GUARD": True})
    s = crawler.settings
    mws = {load_object(k): v for k, v in {**s.getdict("DOWNLOADER_MIDDLEWARES_BASE"),
                                          **s.getdict("DOWNLOADER_MIDDLEWARES")}.items() if v is not None}
    ours, retry = mws.pop(NetGuardMiddleware), mws.pop(RetryMiddleware)
    # exceptions go from high priorities to low: every other process_exception runs first
    assert retry < ours < min(v for k, v in mws.items() if hasattr(k, "process_exception"))
    # off: the middleware is listed but inactive, and says nothing
    crawler = get_crawler(settings_dict={"ADDONS": ADDONS})
    with pytest.raises(NotConfigured) as info:
        NetGuardMiddleware.from_crawler(crawler)
    assert not info.value.args
