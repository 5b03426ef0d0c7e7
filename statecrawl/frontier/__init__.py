"""The frontier: the crawl's shared, durable state in Redis and the worker's side of it.

Everything that decides which request is fetched, by whom, and what becomes of
its output lives here, with what it needs to reach Redis:

* ``scheduler`` (Scrapy's scheduler interface), ``_leasing`` (the local
  buffer of leased requests, reconciliation, quarantine of poison) and
  ``_listeners`` (acks of finished requests, commit results, idleness);
* ``state`` (``WorkerState``: one connection, the group commit) and
  ``_commit`` (sending a commit: outages retried, refusals taken apart);
* ``store`` (``CrawlStore``: one crawl's operations, each a Lua script in
  ``lua/``; ``_admin``: its flush, forget, cancel and delete; ``batch``: what a
  commit carries), ``keys`` (the Redis key schema, in its docstring), ``shards``
  (one crawl over several hash tags: ``STATECRAWL_SHARDS``; ``_slots``: which
  tags) and ``replication``
  (leases and commits that wait for replicas: ``STATECRAWL_REDIS_WAIT_REPLICAS``);
* ``dupefilter``, ``serialize`` + ``_request_schema`` (requests as JSON,
  checked both ways) on ``plainjson`` (plain JSON in and out), ``scope`` (what a
  worker may fetch), ``robots``,
  ``deadletter``, ``item_codec`` (items at rest: zstd frames with the
  dictionary in ``data/``, older plain JSON still read);
* ``liveness`` + ``_watchdog`` (heartbeat, reclaim of dead workers),
  ``_engine`` (the few hooks into Scrapy's engine);
* ``connection``, ``embedded`` (the local Redis), ``redis_errors``;
* ``_scrapy_redis`` (scrapy-redis' connection settings, ``SCHEDULER_PERSIST``
  and ``SCHEDULER_FLUSH_ON_START``) and ``start_urls`` (a scrapy-redis
  spider's pushed start URLs, taken while the worker is busy);
* ``lifecycle`` (purge a crawl's keys without blocking Redis, its bytes) and
  ``sweep`` (``STATECRAWL_FINISHED_TTL``: who purges finished crawls, when).

It imports nothing from the other subpackages; they import from it.
"""
