"""Webhooks of API jobs: Firecrawl's ``webhook`` field, its events queued in Redis and sent by workers.

A crawl or batch-scrape request may carry ``webhook`` (a URL, or ``{url,
headers, metadata, events}``; :class:`statecrawl.api.models.Webhook`). The
job's events -- ``started``, ``page`` (one per document, or per failed page),
``completed``, ``failed`` -- are POSTed to it as Firecrawl does::

    {"success": true, "type": "crawl.page", "id": "<job id>", "webhookId": "<delivery id>",
     "data": [<document>], "metadata": {<the webhook's metadata>}, "error": "<only on failure>"}

``type`` is ``crawl.<event>`` or ``batch_scrape.<event>``; ``data`` is ``[]``
but for a page; ``webhookId`` names the delivery and stays the same on each
retry, so a receiver can drop the duplicates at-least-once delivery brings.
Headers: ``Content-Type: application/json``, the webhook's own ``headers``,
and with ``STATECRAWL_WEBHOOK_SECRET`` set ``X-Firecrawl-Signature:
sha256=<hex HMAC-SHA256 of the raw body>`` (:func:`sign`).

Why a queue in Redis: a crawl must never wait on a receiver, and API nodes
and workers keep nothing of their own. :func:`enqueue` (whoever records the
event) pushes the delivery to the job's ``sc:{id}:job:hooks`` list and marks
the job due in ``sc:api:hooks`` (the rows of :mod:`statecrawl.frontier.keys`);
any process running a :class:`WebhookSender` sends it. A job's deliveries go
out in order -- its ``started`` before its pages, its pages before
``completed`` -- and its pages up to ``STATECRAWL_WEBHOOK_CONCURRENCY`` at
once. A sender claims a job with a lease (``lua/hooks_claim.lua``): no other
sender sends the job's deliveries meanwhile; a sender killed mid-send loses
nothing (they are popped only once sent, ``lua/hooks_settle.lua``), and
another one sends them again when the lease runs out.

Failures (no connection, a timeout, any answer but 2xx -- redirects are not
followed) are retried after ``STATECRAWL_WEBHOOK_BACKOFF`` seconds, doubling,
``STATECRAWL_WEBHOOK_RETRIES`` times; then the delivery is dropped and
logged. The receiver's address is checked like a crawler's
(:mod:`statecrawl.net`), always: a host that is, or resolves to, a loopback,
private, link-local, metadata or reserved address is refused -- not retried --
unless ``STATECRAWL_NET_ALLOW`` lets it through. The sender resolves the name
itself, judges every address, and connects to a judged address (the URL's
host replaced by it; ``Host`` and TLS SNI / certificate check keep the
name), so a DNS answer that changes between the check and the connection
(rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from statecrawl.api.jobs import JobStore
from statecrawl.api.models import Webhook
from statecrawl.exceptions import AddressRefused, ConfigError
from statecrawl.frontier.cluster import is_cluster, node_of
from statecrawl.net.addresses import Allowlist, judge

__all__ = [
    "HOOKS_KEY", "SIGNATURE_HEADER", "WebhookSender", "enqueue", "hooks_key", "sign", "webhook_of",
]

logger = logging.getLogger(__name__)

Event = Literal["started", "page", "completed", "failed"]
HOOKS_KEY = "sc:api:hooks"  #: ZSET: job id -> when its next delivery is due (ms, Redis clock)
SIGNATURE_HEADER = "X-Firecrawl-Signature"
_TYPE_PREFIX = {"crawl": "crawl", "batch": "batch_scrape"}
_EVENTS = frozenset({"started", "page", "completed", "failed"})
_DEFAULTS = {"RETRIES": 5, "BACKOFF": 1.0, "TIMEOUT": 10.0, "CONCURRENCY": 8}
_POLL = 0.5  # seconds between looks at the index when nothing is due sooner


@cache
def _lua(name: str) -> str:
    return resources.files("statecrawl.api").joinpath("lua", f"hooks_{name}.lua").read_text()


def hooks_key(job_id: str) -> str:
    """The job's list of pending deliveries (raises ValueError for a string that is no job id)."""
    return JobStore.keys(job_id)[0] + ":hooks"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Firecrawl-Signature`` value of *body*: ``sha256=`` + hex HMAC-SHA256 with *secret*."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_of(request: Mapping[str, Any] | None) -> Webhook | None:
    """The webhook of a stored job request (a URL string or an object), None if it has none."""
    raw = (request or {}).get("webhook")
    if not raw:
        return None
    try:
        return Webhook.model_validate(raw)
    except ValidationError:
        logger.warning("ignoring an invalid stored webhook: %r", raw)
        return None


async def enqueue(client: Redis, job_id: str, kind: str, event: Event,
                  data: Sequence[Mapping[str, Any]] | None = None, error: str | None = None) -> bool:
    """Queue *event* of the job for its webhook, if the job has one that takes it; True if queued.

    *kind* is the job's (``crawl`` / ``batch``); *data* the page's documents
    (``[document]``; none for a failed page, which gives *error*), nothing for
    the other events. Two round trips, whoever calls it: the request and the
    Redis clock, then the push (``lua/hooks_push.lua``) and the index entry.
    Sending is left to the senders, so this never waits on the receiver.
    """
    if event not in _EVENTS or kind not in _TYPE_PREFIX:
        raise ValueError(f"unknown webhook event {kind!r}/{event!r}")
    keys = JobStore.keys(job_id)
    if is_cluster(client):  # a cluster pipeline refuses TIME: the job's master's clock
        raw = await client.get(keys[1])
        sec, usec = await client.time(target_nodes=node_of(client, keys[0]))  # type: ignore[call-arg]
    else:
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(keys[1])
            pipe.time()
            raw, (sec, usec) = await pipe.execute()
    webhook = webhook_of(json.loads(raw) if raw else None)
    if webhook is None or event not in webhook.events:
        return False
    payload: dict[str, Any] = {"success": error is None and event != "failed",
                               "type": f"{_TYPE_PREFIX[kind]}.{event}", "data": list(data or [])}
    if error is not None:
        payload["error"] = error
    entry = json.dumps({"event": event, "attempt": 0, "payload": payload},
                       separators=(",", ":"), ensure_ascii=False)
    push, push_keys = client.register_script(_lua("push")), [keys[0], hooks_key(job_id)]
    due = {job_id: int(sec) * 1000 + int(usec) // 1000}
    if is_cluster(client):  # a cluster pipeline refuses EVALSHA: two calls, push first
        pushed = await push(keys=push_keys, args=[f"{uuid.uuid4()} {entry}"])
        await client.zadd(HOOKS_KEY, due, nx=True)
        return bool(pushed)
    async with client.pipeline(transaction=False) as pipe:
        await push(keys=push_keys, args=[f"{uuid.uuid4()} {entry}"], client=pipe)
        pipe.zadd(HOOKS_KEY, due, nx=True)
        pushed, _ = await pipe.execute()
    return bool(pushed)


def _setting(env: Mapping[str, Any], name: str, kind: type[int] | type[float], least: float) -> Any:
    raw = env.get(f"STATECRAWL_WEBHOOK_{name}")
    if raw is None or raw == "":
        return _DEFAULTS[name]
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        value = least - 1
    if not value >= least:
        raise ConfigError(f"STATECRAWL_WEBHOOK_{name}={raw!r}: give {kind.__name__} >= {least}")
    return value


class WebhookSender:
    """Sends the queued webhook deliveries of every job; run one in each worker supervisor.

    *client* is a redis.asyncio client returning bytes. *allow* lets refused
    receivers through (``STATECRAWL_NET_ALLOW``); *secret* signs the bodies.
    *verify* is httpx's TLS verification (True, or an ``ssl.SSLContext``).
    """

    def __init__(self, client: Redis, *, allow: Allowlist | None = None, secret: str | None = None,
                 retries: int = 5, backoff: float = 1.0, timeout: float = 10.0, concurrency: int = 8,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.client = client
        self.allow = allow if allow is not None else Allowlist()
        self.secret = secret or None
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.concurrency = max(1, concurrency)
        self.lease_ms = int(max(30.0, 3 * timeout) * 1000)  # a group's sends end within one timeout
        self.verify = verify
        self._scripts = {name: client.register_script(_lua(name))
                         for name in ("claim", "settle", "release")}

    @classmethod
    def from_env(cls, client: Redis, env: Mapping[str, Any] | None = None) -> WebhookSender:
        """Configured by ``STATECRAWL_WEBHOOK_*`` and ``STATECRAWL_NET_ALLOW`` (default: os.environ)."""
        env = os.environ if env is None else env
        return cls(client, allow=Allowlist.from_settings(env),
                   secret=env.get("STATECRAWL_WEBHOOK_SECRET") or None,
                   retries=_setting(env, "RETRIES", int, 0), backoff=_setting(env, "BACKOFF", float, 0),
                   timeout=_setting(env, "TIMEOUT", float, 0.1),
                   concurrency=_setting(env, "CONCURRENCY", int, 1))

    def _http(self) -> httpx.AsyncClient:
        # No keep-alive: connections are made to an IP address, and a pooled TLS connection
        # checked for one host name must not carry a request for another name on that address.
        return httpx.AsyncClient(trust_env=False, verify=self.verify, follow_redirects=False,
                                 timeout=self.timeout, limits=httpx.Limits(
                                     max_connections=self.concurrency, max_keepalive_connections=0))

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until *stop* is set; what is in flight then finishes first.

        Cancelling it stops at once: deliveries in flight are neither popped nor
        released, and any sender sends them again when their lease runs out."""
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.concurrency)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            async with self._http() as http:
                while not stop.is_set():
                    wait, claimed = _POLL, []
                    if len(tasks) < self.concurrency:
                        try:
                            claimed, wait = await self._claim(self.concurrency - len(tasks))
                        except RedisError as exc:
                            logger.warning("webhook sender: Redis: %s", exc)
                    for job_id, lease in claimed:
                        task = asyncio.create_task(self._serve(http, slots, job_id, lease))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if claimed and len(tasks) < self.concurrency:
                        continue  # more may be due
                    await asyncio.wait([stopped, *tasks], timeout=wait,
                                       return_when=asyncio.FIRST_COMPLETED)
                if tasks:
                    await asyncio.wait(tasks)
        finally:  # cancelled: sends in flight stop unsettled, their leases run out
            stopped.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim(self, most: int) -> tuple[list[tuple[str, str]], float]:
        """Up to *most* due jobs as (job id, lease), and the seconds until the next is due."""
        reply = await self._scripts["claim"](keys=[HOOKS_KEY], args=[self.lease_ms, most])
        lease, first, now = reply[0].decode(), reply[1], int(reply[2])
        wait = _POLL if not first else min(_POLL, max(0.01, (float(first) - now) / 1000))
        return [(job_id.decode(), lease) for job_id in reply[3:]], wait

    async def _serve(self, http: httpx.AsyncClient, slots: asyncio.Semaphore, job_id: str,
                     lease: str) -> None:
        """Send the job's next group: its first delivery, or its first run of pages (at most
        *concurrency*), at once; settle them, and release the job due again or out of the index."""
        key = hooks_key(job_id)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(JobStore.keys(job_id)[1])
                pipe.lrange(key, 0, self.concurrency - 1)
                raw, entries = await pipe.execute()
            webhook = webhook_of(json.loads(raw) if raw else None)
            group: list[tuple[str, dict[str, Any]]] = []
            for entry in entries:
                delivery_id, _, text = entry.decode().partition(" ")
                item = json.loads(text)
                if group and (item["event"] != "page" or group[0][1]["event"] != "page"):
                    break
                group.append((delivery_id, item))
            outcomes = await asyncio.gather(*(self._deliver(http, slots, job_id, webhook, i, item)
                                              for i, item in group))
            retried = [delay for _, delay in outcomes if delay is not None]
            left = await self._scripts["settle"](
                keys=[JobStore.keys(job_id)[0], key],
                args=[len(group), *(i for i, _ in group), *(entry or "" for entry, _ in outcomes)])
            delay = -1 if not left else int(min(retried, default=0) * 1000)
            released = await self._scripts["release"](keys=[HOOKS_KEY], args=[job_id, lease, delay])
            if released and delay < 0 and await self.client.llen(key):
                await self.client.zadd(HOOKS_KEY, {job_id: 0}, nx=True)  # pushed as we removed it
        except Exception:  # the lease runs out and any sender tries the job again
            logger.exception("webhook sender: job %s", job_id)

    async def _deliver(self, http: httpx.AsyncClient, slots: asyncio.Semaphore, job_id: str,
                       webhook: Webhook | None, delivery_id: str,
                       item: dict[str, Any]) -> tuple[str | None, float | None]:
        """POST one delivery; (the entry to put back, its delay) for a retry, else (None, None)."""
        if webhook is None:  # the job's request is gone (expired) or has no webhook any more
            return None, None
        sent = item["payload"]
        payload = {"success": sent["success"], "type": sent["type"], "id": job_id,
                   "webhookId": delivery_id, "data": sent["data"], "metadata": webhook.metadata}
        if "error" in sent:
            payload["error"] = sent["error"]
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = httpx.Headers({"Content-Type": "application/json"})
        headers.update(webhook.headers)
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        attempt = item["attempt"] + 1
        what = f"webhook {sent['type']} {delivery_id} of job {job_id} to {webhook.url}"
        try:
            async with slots:
                status = await asyncio.wait_for(self.post(http, webhook.url, headers, body),
                                                self.timeout)
            if 200 <= status < 300:
                return None, None
            why = f"HTTP {status}"
        except (AddressRefused, httpx.InvalidURL, UnicodeError) as exc:  # the same next time
            logger.warning("%s not sent: %s", what, exc)
            return None, None
        except Exception as exc:  # no connection, a timeout, a broken answer: try again
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if attempt > self.retries:
            logger.warning("%s dropped after %d attempts: %s", what, attempt, why)
            return None, None
        delay = self.backoff * 2 ** (attempt - 1)
        logger.info("%s failed (%s), attempt %d; again in %.1f s", what, why, attempt, delay)
        entry = json.dumps({**item, "attempt": attempt}, separators=(",", ":"), ensure_ascii=False)
        return f"{delivery_id} {entry}", delay

    async def post(self, http: httpx.AsyncClient, url: str, headers: httpx.Headers,
                   body: bytes) -> int:
        """POST *body* to *url* through the address check; the response status.

        Resolves the host, refuses the whole answer if one address is refused
        (:func:`statecrawl.net.addresses.judge`, raising AddressRefused), then
        tries the addresses in turn, connecting to the address itself. The
        response body is not read.
        """
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")
        port = target.port or (443 if target.scheme == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refusal = judge(host, addresses, self.allow)
        if refusal is not None:
            raise AddressRefused(str(refusal))
        headers = httpx.Headers(headers)
        headers["Host"] = target.netloc.decode("ascii")
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        error: Exception = OSError(f"no address for {host}")
        for address in addresses:
            try:
                async with http.stream("POST", target.copy_with(host=address.partition("%")[0]),
                                       content=body, headers=headers,
                                       extensions=extensions) as response:
                    return response.status_code
            except httpx.ConnectError as exc:
                error = exc
        raise error
