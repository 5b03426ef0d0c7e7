"""The Redis key schema: every key statecrawl writes, in one place.

All keys of one crawl share the prefix ``sc:{<crawl_id>}:``; the braces are a
Redis Cluster hash tag, so a crawl's keys live in one slot and each Lua script
can touch them atomically. ``<crawl_id>`` matches ``[A-Za-z0-9._-]{1,64}``.

=============================  ======  ==========================================
key                            type    contents
=============================  ======  ==========================================
``sc:crawls``                  SET     ids of every crawl in this Redis
``sc:{id}:meta``               HASH    ``polite`` (``1``: leases follow the
                                       fleet-wide politeness budget, keys
                                       ``hostq``/``ready``/``hosts``; never
                                       unset once set), ``epoch`` (a random token set when the
                                       crawl is created: leases and commits
                                       carry it, and fail with ``SCLOST`` when
                                       meta is gone or holds another one),
                                       ``state`` (running / finished / cancelled),
                                       ``created_at``, ``finished_at`` (unix s),
                                       ``forgotten_at`` (unix s: its dupefilter
                                       was deleted when it finished, under
                                       ``SCHEDULER_PERSIST=False``; dropped when
                                       it runs again),
                                       ``spider``, ``start_url``, ``limit``
                                       (max requests admitted, 0 = none; granted
                                       in a sharded crawl: ``quota_out``),
                                       ``args`` (JSON of the spider arguments),
                                       ``sink`` (where the items go: ``redis``,
                                       a directory or ``s3://bucket/prefix``;
                                       fixed by the crawl's first worker),
                                       ``dupefilter`` (``exact`` / ``bloom`` /
                                       ``set``; fixed by the crawl's first
                                       worker) and, for ``bloom``,
                                       ``bloom_capacity``, ``bloom_error_rate``,
                                       ``bloom_m`` (bits), ``bloom_k`` (hashes)
``sc:{id}:seq``                STRING  counter; the next request id (given at
                                       a request's first lease)
``sc:{id}:zdict``              STRING  the zstd dictionary of the crawl's packed
                                       requests (:mod:`statecrawl.frontier.packing`;
                                       ``SET NX`` by the first worker able to)
``sc:{id}:ts:<bucket>``        HASH    rolling counters of a 10 s bucket (Redis
                                       s // 10; :mod:`statecrawl.frontier.rolling`),
                                       written by commits, kept an hour
``sc:{id}:fifo``               ZSET    the scores (-priority) with a list below
                                       (member = score, as an integer)
``sc:{id}:fifo:<score>``       LIST    the frontier, a list per score: new
                                       requests, packed (``<marker><host>NUL
                                       <zstd compact JSON>``), oldest first; a
                                       lease pops them and gives each its id
``sc:{id}:queue``              ZSET    the rest of the frontier: requests given
                                       back after a lease (data in ``reqs``) or
                                       stored before the lists; member = id (12
                                       hex digits), score = -priority. A lease
                                       takes the best score of both parts,
                                       ``queue`` first, then by id.
                                       Also a pub/sub channel: a message means
                                       "work appeared" (enqueue into an empty
                                       frontier, or a reclaim), or is
                                       ``backoff <host> <until ms>`` (a polite
                                       crawl's host answered 429/503)
``sc:{id}:reqs``               HASH    request id -> the request, packed (or,
                                       stored before packing, its JSON:
                                       :mod:`statecrawl.frontier.serialize`),
                                       for every leased request and every one
                                       in ``queue`` or ``hostq``; deleted on ack
``sc:{id}:leases``             HASH    request id -> ``"<worker> <score>"`` for
                                       every request a worker has popped and
                                       not yet acknowledged (the in-flight set);
                                       ``"<worker> <score> <host>"`` if polite
``sc:{id}:hostq``              ZSET    a polite crawl's per-host queues
                                       (:mod:`statecrawl.frontier.hosts`; then
                                       ``queue`` is only the intake, sorted
                                       into ``hostq`` by each lease): all
                                       scores 0, member = ``"<host> <priority>
                                       <id>"`` (priority: -priority + 2^31 as
                                       10 digits), so a host's head is one
                                       ``ZRANGEBYLEX``
``sc:{id}:ready``              ZSET    a polite crawl's hosts with queued
                                       requests -> the time each may next be
                                       served (ms, Redis clock); a host at its
                                       concurrency cap is parked a minute
                                       ahead until one of its leases ends
``sc:{id}:hosts``              HASH    the politeness budget, per host
                                       (hostname, lowercase): ``<host>`` ->
                                       its next allowed time (ms, Redis
                                       clock); ``<host>|n`` requests in
                                       flight (absent: none); ``<host>|d`` / ``<host>|c``
                                       operator overrides of the delay (ms) /
                                       cap on requests in flight;
                                       ``<host>|r`` robots.txt's Crawl-delay
                                       (ms); ``<host>|a`` AutoThrottle's delay
                                       (ms); ``<host>|b`` 429/503 answers in a
                                       row. The crawl's own: ``*|d``, ``*|c``,
                                       ``*|h`` (lease horizon, ms), ``*|at``
                                       (AutoThrottle target concurrency, 0 =
                                       off), ``*|as`` / ``*|am`` (its start /
                                       largest delay, ms), ``*|l`` (the
                                       lateness a worker may send with, ms,
                                       added to every delay)
``sc:{id}:workers``            ZSET    worker id -> last heartbeat (ms, Redis
                                       clock); written by each worker's
                                       heartbeat thread and on every lease. A
                                       worker silent for longer than
                                       ``STATECRAWL_WORKER_TIMEOUT`` is dead:
                                       the next heartbeat of any worker puts
                                       its leases back into ``queue``
``sc:{id}:tokens``             HASH    ``<worker>`` / ``<worker>|lease`` (/ ``|q+``
                                       ``|q-``: :mod:`._quota`) -> ``"<token>
                                       <result>"``: the last commit / lease of a
                                       worker (one re-sent is not applied twice);
                                       ``<worker>|info``: its heartbeat's JSON
``sc:{id}:digests``            HASH    the ``exact`` dupefilter (the default):
                                       field = the first 2 bytes of a request
                                       fingerprint (65,536 buckets), value = the
                                       next 8 bytes of each fingerprint in that
                                       bucket, concatenated (80 bits kept).
                                       With a directory or S3 sink, whatever
                                       the dupefilter, also the SHA-1 of
                                       ``"item " + <item key>`` of each item
                                       written, so ``items`` in the stats
                                       counts a page written twice once
``sc:{id}:bloom``              STRING  the ``bloom`` dupefilter: a bitmap of
                                       ``bloom_m`` bits, preallocated when the
                                       crawl is created; ``bloom_k`` bits per
                                       fingerprint (double hashing)
``sc:{id}:seen``               SET     the ``set`` dupefilter of crawls begun
                                       before ``digests`` existed: 20-byte
                                       binary fingerprints, one member each
``sc:{id}:items``              HASH    item key -> the item, with the default
                                       ``redis`` sink (``STATECRAWL_SINK``):
                                       its JSON as one zstd frame made with
                                       the shipped dictionary
                                       (:mod:`statecrawl.frontier.item_codec`;
                                       values of older versions, plain JSON
                                       starting with ``{``, still load). The
                                       key is the item's ``url`` (else a SHA-1
                                       of its JSON), so a re-fetched page
                                       replaces its item instead of adding a
                                       second one. ``EXPIRE``
                                       ``STATECRAWL_ITEMS_TTL`` once the crawl
                                       is finished (none while it runs). Empty
                                       with a directory or S3 sink, which holds
                                       the items (:mod:`statecrawl.output.sink`)
``sc:{id}:failed``             SET     item keys whose item carries an error
``sc:{id}:dead``               LIST    dead letters: stored entries (requests,
                                       cookies, storage states, items) that
                                       could not be rebuilt, as JSON, newest
                                       last, capped
                                       (:mod:`statecrawl.frontier.deadletter`)
``sc:{id}:stats``              HASH    crawl-wide counters: ``enqueued``,
                                       ``admitted`` (requests counted against
                                       ``limit``: not robots.txt, sitemaps or
                                       retries), ``duplicates``, ``limit_dropped``,
                                       ``leased``, ``acked``, ``released``,
                                       ``reclaimed``, ``retried``, ``robots_denied``;
                                       what was refused or dropped:
                                       ``quarantined`` (+ ``quarantined_<kind>``),
                                       ``requests_unserializable``,
                                       ``items_unserializable``,
                                       ``items_too_large``, ``requests_refused``,
                                       ``items_refused``; ``seen`` (fingerprints in
                                       ``digests`` / ``bloom``) and, for
                                       ``bloom``, ``bloom_estimated_false_skips``
                                       (new URLs expected to have been skipped
                                       as false positives); with sessions also
                                       ``sessions_created``, ``sessions_retired``,
                                       ``logins``, ``login_failures``
``sc:{id}:render_hosts``       HASH    the ``auto`` render mode's memory, per
                                       host (``netloc``): ``"<host> checked"``
                                       / ``"<host> built"`` -> pages checked
                                       over HTTP / of those, script-built;
                                       ``"<host>"`` (present once most checked
                                       pages were script-built) -> browser
                                       pages since. Every worker renders such
                                       a host's pages in the browser; each
                                       ``STATECRAWL_RENDER_RECHECK``-th is
                                       fetched over HTTP again to re-check
``sc:{id}:sessions``           HASH    session id -> session record JSON:
                                       ``created`` (ms, Redis clock), ``proxy``
                                       (index into ``STATECRAWL_PROXIES``, -1 =
                                       none; never the URL), ``uses``,
                                       ``errors`` (error score), ``pooled``,
                                       ``retired`` (reason: ``403``,
                                       ``max_uses``, ...), ``retired_at``. Every
                                       session with a jar has one; retired
                                       records stay
``sc:{id}:pool``               ZSET    the active pool sessions (``pool-<n>``),
                                       score = ``created`` (ms)
``sc:{id}:session_seq``        STRING  counter; numbers new sessions and picks
                                       their proxy round-robin
``sc:{id}:jar:<session>``      HASH    a session's cookie jar: field = JSON
                                       ``[domain, path, name]``, value = the
                                       cookie as JSON (:mod:`statecrawl.sessions.cookies`;
                                       a Fernet token with
                                       ``STATECRAWL_SECRET_KEY``). Written as
                                       diffs; deleted when the session retires
``sc:{id}:browser:<session>``  STRING  a session's Playwright storage state
                                       (cookies + localStorage) JSON, sealed
                                       like jar values
``sc:{id}:login``              HASH    ``generation`` (successful logins so
                                       far; workers mount generation N and
                                       log in again only if N is the newest
                                       and failed), ``logged_in_at`` (ms),
                                       ``worker``, ``failed_at`` + ``error``
                                       (a failed attempt since the last success)
``sc:{id}:login_lock``         STRING  ``"<token> <worker>"`` while one worker
                                       logs in (SET NX PX; released by
                                       compare-and-delete, taken over if the
                                       holder is no longer in ``workers``)
``sc:{id}:spider_state``       STRING  the spider's ``state`` dict as JSON
                                       (sealed like jar values), saved every
                                       ``STATECRAWL_CHECKPOINT_INTERVAL``
``sc:{id}:ticket:<rid>``       STRING  a service request in flight
                                       (:mod:`statecrawl.frontier.service`;
                                       ``<rid>`` a random hex id): its secret
                                       (the API scrape's ``headers`` as JSON,
                                       a Fernet token with
                                       ``STATECRAWL_SECRET_KEY``; ``""`` when
                                       none). ``PEXPIRE`` = the caller's
                                       timeout; deleted by the caller once it
                                       has the reply or gives up. A worker
                                       skips a request whose ticket is gone
``sc:{id}:reply:<rid>``        LIST    the reply to a service request (JSON),
                                       pushed by the worker that served it
                                       (only while its ticket exists) before
                                       it acknowledges the lease; ``PEXPIRE``
                                       ``STATECRAWL_SERVICE_REPLY_TTL``. A
                                       re-fetch after a worker died may push
                                       a second reply: the caller takes the
                                       first and deletes the key
``sc:{id}:job``                HASH    an API job's record (crawl id = job id;
                                       :mod:`statecrawl.api.jobs`): ``kind``
                                       (``crawl`` / ``batch``), ``status``
                                       (``scraping``, ``completed``,
                                       ``failed``, ``cancelled``), ``url``,
                                       ``limit`` (documents kept at most),
                                       ``docs``, ``failed``, ``total``,
                                       ``created_at``, ``updated_at``,
                                       ``finished_at``, ``expires_at`` (ms,
                                       Redis clock), ``error``, ``queued``
                                       (a batch whose pages are all in the
                                       scrape service's frontier). Every key of a
                                       job carries one ``PEXPIREAT``: its last
                                       write + ``STATECRAWL_API_JOB_TTL``
``sc:{id}:job:request``        STRING  the job's request body as JSON (v2
                                       names), without its ``headers``
``sc:{id}:job:docs``           HASH    ``"0"``, ``"1"``, ... (completion order)
                                       -> a document's JSON, zstd-compressed
                                       (one frame each); a status page is one
                                       HMGET of its indexes
``sc:{id}:job:errors``         LIST    the job's failed pages, JSON ``{id,
                                       timestamp, url, code?, error}``, the
                                       first 10,000
``sc:{id}:job:robots``         SET     URLs robots.txt kept out of the job
                                       (the first 10,000)
``sc:{id}:job:index``          HASH    document key (the page's URL; ``#<n>``
                                       for a batch's n-th URL) -> its slot in
                                       ``docs``, or ``failed``: a page fetched
                                       again replaces its document and counts
                                       once (:mod:`statecrawl.api.worker`)
``sc:{id}:job:secret``         STRING  a crawl job's ``scrapeOptions.headers``,
                                       ``{"headers": {...}}`` as JSON, a Fernet
                                       token with ``STATECRAWL_SECRET_KEY``;
                                       read by its workers (pass-through),
                                       deleted when the job ends
``sc:{id}:job:hooks``          LIST    the job's webhook deliveries not yet
                                       sent, oldest first
                                       (:mod:`statecrawl.api.webhooks`): each
                                       ``"<delivery id> <JSON {event, attempt,
                                       payload}>"``; popped once sent (or
                                       dropped), put back with ``attempt`` + 1
                                       to be retried. ``PEXPIREAT`` = the job's
                                       ``expires_at`` at each push
``sc:api:active:<kind>``       ZSET    running API job ids of a kind ->
                                       created (ms); a job leaves it when it
                                       ends, and listing drops ids whose
                                       record ended or expired
``sc:api:hooks``               ZSET    job ids with webhook deliveries pending
                                       -> when the next is due (ms, Redis
                                       clock). A sender claims a due job by
                                       moving its score to now + a lease;
                                       ids whose list is empty or gone leave
                                       when a sender finds them so
``sc:api:rate:{<who>}``        STRING  the API rate limit of one client
                                       (:mod:`statecrawl.api.limits`): its GCRA
                                       theoretical arrival time (microseconds,
                                       Redis clock); ``PX`` = until its burst is
                                       whole again. ``<who>``: ``key-<16 hex>``
                                       (the start of the SHA-256 of an API key;
                                       never the key) or ``addr-<client
                                       address>`` (no API keys)
``sc:api:inflight:{<who>}``    ZSET    the client's API requests in flight:
                                       random request id -> lease end
                                       (microseconds, Redis clock), renewed while
                                       the request runs; a request is added, and
                                       expired leases dropped, by one script;
                                       removed when its response is sent
=============================  ======  ==========================================

``<session>`` is a session id: ``default`` (requests that name no
``meta["cookiejar"]``, and the login), ``pool-<n>`` (pool sessions), or the
``cookiejar`` value (``[A-Za-z0-9._:-]{1,64}``, else ``h:`` + a hash of it).

A request's way through these keys: :mod:`.store`. Shards (``STATECRAWL_SHARDS`` > 1:
``meta.shards``, ``meta.shard_by`` = ``host`` if polite, ``meta.shards_ready``): 1..n-1 are
``sc:{<id>~<s>.<k>}:`` (:mod:`._slots`), each with its part of the frontier, dupefilter and
politeness in keys named as above (``seq fifo fifo:<score> queue reqs leases digests stats
tokens workers ts:<bucket> dead hostq ready hosts``) and a ``shard`` HASH (``epoch``,
``state``, ``start_url``, ``polite``): :mod:`.shards`.

Global keys -- ``sc:crawls``, ``sc:api:active:<kind>``, ``sc:api:hooks`` -- are indexes
outside every crawl's hash tag (other slots on a Redis Cluster), so no script, transaction
or pipeline writes one with a crawl's keys: an id is added after the crawl's ``meta``
exists and dropped last. A crash in between leaves a crawl unlisted, listed again by the
next ``open_crawl`` or by ``statecrawl list`` (which finds metas by ``SCAN``), or an id
listed with no crawl, which readers skip and drop. ``statecrawl purge``
(:mod:`statecrawl.frontier.lifecycle`) deletes ``meta`` first, then every other key under
``sc:{<id>}:`` or ``sc:{<id>~...}:`` by ``SCAN`` (each master of a cluster), then the
index entries: a new key of a crawl needs no change there, only this prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from statecrawl.exceptions import ConfigError
from statecrawl.frontier._slots import shard_tag

__all__ = ["CRAWLS_KEY", "MAX_SHARDS", "CrawlKeys", "validate_crawl_id"]

CRAWLS_KEY = "sc:crawls"
MAX_SHARDS = 1024  #: most shards one crawl may have (STATECRAWL_SHARDS)
_CRAWL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def validate_crawl_id(crawl_id: str) -> str:
    """Return *crawl_id* if it is usable as part of a key, else raise ConfigError."""
    if not isinstance(crawl_id, str) or not _CRAWL_ID.fullmatch(crawl_id):
        raise ConfigError(f"invalid crawl id {crawl_id!r}: use 1-64 characters from A-Z a-z 0-9 . _ -")
    return crawl_id


@dataclass(frozen=True)
class CrawlKeys:
    """The names of one crawl's keys (module docstring), or of its shard *shard* of *shards*."""

    crawl_id: str
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        validate_crawl_id(self.crawl_id)
        if not 0 <= self.shard < max(self.shards, 1) <= MAX_SHARDS:
            raise ConfigError(f"shard {self.shard} of {self.shards} out of range")

    @property
    def prefix(self) -> str:
        tag = shard_tag(self.crawl_id, self.shard, self.shards) if self.shard else self.crawl_id
        return f"sc:{{{tag}}}:"

    def of_shard(self, shard: int) -> CrawlKeys:  # shard *shard* of this crawl (0: its own)
        return self if shard == self.shard else CrawlKeys(self.crawl_id, shard, self.shards)

    meta = property(lambda self: self.prefix + ("shard" if self.shard else "meta"))
    seq = property(lambda self: self.prefix + "seq")
    queue = property(lambda self: self.prefix + "queue")
    fifo = property(lambda self: self.prefix + "fifo")
    zdict = property(lambda self: self.prefix + "zdict")
    ts = property(lambda self: self.prefix + "ts")
    reqs = property(lambda self: self.prefix + "reqs")
    leases = property(lambda self: self.prefix + "leases")
    hostq = property(lambda self: self.prefix + "hostq")
    ready = property(lambda self: self.prefix + "ready")
    hosts = property(lambda self: self.prefix + "hosts")
    workers = property(lambda self: self.prefix + "workers")
    seen = property(lambda self: self.prefix + "seen")
    digests = property(lambda self: self.prefix + "digests")
    bloom = property(lambda self: self.prefix + "bloom")
    items = property(lambda self: self.prefix + "items")
    failed = property(lambda self: self.prefix + "failed")
    dead = property(lambda self: self.prefix + "dead")
    stats = property(lambda self: self.prefix + "stats")
    tokens = property(lambda self: self.prefix + "tokens")
    render_hosts = property(lambda self: self.prefix + "render_hosts")
    sessions = property(lambda self: self.prefix + "sessions")
    pool = property(lambda self: self.prefix + "pool")
    session_seq = property(lambda self: self.prefix + "session_seq")
    login = property(lambda self: self.prefix + "login")
    login_lock = property(lambda self: self.prefix + "login_lock")
    spider_state = property(lambda self: self.prefix + "spider_state")

    def jar(self, session: str) -> str:
        """The cookie jar of *session* (an id from :func:`statecrawl.sessions.store.session_id`)."""
        return f"{self.prefix}jar:{session}"

    def browser(self, session: str) -> str:  # the Playwright storage state of *session*
        return f"{self.prefix}browser:{session}"

    def ticket(self, request_id: str) -> str:
        """A service request's ticket (:mod:`statecrawl.frontier.service`)."""
        return f"{self.prefix}ticket:{request_id}"

    def reply(self, request_id: str) -> str:  # the list a service request's reply is pushed to
        return f"{self.prefix}reply:{request_id}"

    def rolling(self, bucket: int) -> str:
        """The rolling counters of one 10-second bucket (:mod:`statecrawl.frontier.rolling`)."""
        return f"{self.ts}:{bucket}"

    def fifo_list(self, score: int | str) -> str:  # the frontier's list of *score* (-priority)
        return f"{self.fifo}:{score}"

    def all(self) -> list[str]:
        """Every fixed-name key of the crawl (for deletion); sessions' jars and storage states:
        :meth:`statecrawl.sessions.store.SessionStore.delete`; lists: :meth:`fifo_list`."""
        return [self.meta, self.seq, self.queue, self.fifo, self.zdict, self.reqs, self.leases, self.workers,
                self.seen, self.digests, self.bloom, self.items, self.failed, self.dead, self.stats,
                self.tokens, self.render_hosts, self.sessions, self.pool, self.session_seq,
                self.login, self.login_lock, self.spider_state, self.hostq, self.ready, self.hosts]
