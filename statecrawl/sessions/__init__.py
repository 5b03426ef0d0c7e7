"""Sessions that outlive workers: cookie jars, the pool, the login, browser states, checkpoints.

* ``hub`` (``Sessions``: one worker's view of the crawl's sessions, and the
  flush that writes them) with ``_book`` (its pool bookkeeping) and ``jar``
  (a session's cookie jar, tracking what changed);
* ``store`` (``SessionStore``: the session keys in Redis) and ``crypto``
  (encryption at rest);
* the Scrapy components: ``cookies`` (``RedisCookiesMiddleware``), ``pool``
  (``SessionMiddleware``), ``login`` (``LoginMiddleware``), ``passthrough``
  (``PassThroughMiddleware``), ``browser_state`` (``BrowserSessionMiddleware``)
  and ``checkpoint`` (``SpiderStateCheckpoint``).

Uses :mod:`statecrawl.frontier`; nothing there uses this.
"""
