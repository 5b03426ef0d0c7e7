"""Job webhooks: queued in the session's redis-server, sent by real senders to a real receiver.

The receiver is a threaded HTTP server on 127.0.0.1 that records each POST
(headers and raw body) and can answer the first N with a 500. 127.0.0.1 is
loopback, which the webhook guard refuses: the senders here allow it
explicitly, except where the refusal is what is tested. Every wait is
bounded (a few seconds at most).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

from statecrawl.api import JobStore
from statecrawl.api.webhooks import HOOKS_KEY, SIGNATURE_HEADER, WebhookSender, enqueue, hooks_key
from statecrawl.exceptions import ConfigError
from statecrawl.net import Allowlist

T = TypeVar("T")
LOOPBACK = Allowlist.parse(["127.0.0.1"])


@dataclass
class Hit:
    at: float
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    port: int = 0
    fail_first: int = 0
    slow_first: float = 0.0  # seconds the first request waits for its answer
    status: int = 200
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [hit.body for hit in self.hits]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with receiver.lock:
            receiver.hits.append(Hit(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, raw))
            status = 500 if len(receiver.hits) <= receiver.fail_first else receiver.status
            slow = receiver.slow_first if len(receiver.hits) == 1 else 0.0
        time.sleep(slow)
        try:
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the sender gave up on this one

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.receiver = Receiver(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as r:
        yield r


def run(redis_url: str, body: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            await client.delete(HOOKS_KEY)  # another test's leftovers are not this one's to send
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


@asynccontextmanager
async def sending(*senders: WebhookSender) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in senders]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def until(check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def sender(client: Redis, **kw: Any) -> WebhookSender:
    kw.setdefault("allow", LOOPBACK)
    return WebhookSender(client, **{"backoff": 0.1, "timeout": 3.0, **kw})


async def crawl_job(client: Redis, webhook: Any, kind: str = "crawl") -> str:
    body = ({"url": "https://example.com", "limit": 100} if kind == "crawl"
            else {"urls": ["https://example.com/a", "https://example.com/b"]})
    if webhook is not None:
        body["webhook"] = webhook
    job, _ = await JobStore(client).create(kind, body)  # type: ignore[arg-type]
    return job.id


def doc(i: int) -> dict[str, Any]:
    return {"markdown": f"# page {i}", "metadata": {"sourceURL": f"https://example.com/{i}", "statusCode": 200}}


async def drained(client: Redis, job_id: str) -> bool:
    return not await client.llen(hooks_key(job_id)) and await client.zscore(HOOKS_KEY, job_id) is None


async def until_drained(client: Redis, job_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await drained(client, job_id):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_payload_per_event_and_kind(redis_url: str, receiver: Receiver) -> None:
    async def body(client: Redis) -> None:
        hook = {"url": receiver.url(), "headers": {"X-Team": "t1"}, "metadata": {"run": 7}}
        crawl = await crawl_job(client, hook)
        batch = await crawl_job(client, receiver.url(), kind="batch")  # the plain-URL form
        assert await enqueue(client, crawl, "crawl", "started")
        assert await enqueue(client, crawl, "crawl", "page", [doc(1)])
        assert await enqueue(client, crawl, "crawl", "page", error="HTTP 404")
        assert await enqueue(client, crawl, "crawl", "completed")
        for event, kw in (("started", {}), ("page", {"data": [doc(2)]}), ("failed", {"error": "boom"})):
            assert await enqueue(client, batch, "batch", event, **kw)  # type: ignore[arg-type]
        async with sending(sender(client)):
            await until(lambda: len(receiver.hits) == 7)
        assert await drained(client, crawl) and await drained(client, batch)
        by_job: dict[str, list[dict[str, Any]]] = {}
        for hit in receiver.hits:
            assert hit.headers["content-type"] == "application/json"
            assert SIGNATURE_HEADER.lower() not in hit.headers  # no secret, no signature
            assert (hit.headers.get("x-team") == "t1") == (hit.body["id"] == crawl)
            by_job.setdefault(hit.body["id"], []).append(hit.body)
        for sent in by_job.values():
            assert uuid.UUID(sent[0]["webhookId"])
            for b in sent:
                b.pop("webhookId")
        sent = by_job[crawl]
        assert sent[0] == {"success": True, "type": "crawl.started", "id": crawl, "data": [],
                           "metadata": {"run": 7}}
        # A run of pages goes out at once (STATECRAWL_WEBHOOK_CONCURRENCY): any order among them.
        assert sorted(sent[1:3], key=lambda b: b["success"]) == [
            {"success": False, "type": "crawl.page", "id": crawl, "data": [], "metadata": {"run": 7},
             "error": "HTTP 404"},
            {"success": True, "type": "crawl.page", "id": crawl, "data": [doc(1)], "metadata": {"run": 7}},
        ]
        assert sent[3:] == [
            {"success": True, "type": "crawl.completed", "id": crawl, "data": [], "metadata": {"run": 7}}]
        assert by_job[batch] == [
            {"success": True, "type": "batch_scrape.started", "id": batch, "data": [], "metadata": {}},
            {"success": True, "type": "batch_scrape.page", "id": batch, "data": [doc(2)], "metadata": {}},
            {"success": False, "type": "batch_scrape.failed", "id": batch, "data": [], "metadata": {},
             "error": "boom"},
        ]
    run(redis_url, body)


def test_only_subscribed_events_are_queued(redis_url: str, receiver: Receiver) -> None:
    async def body(client: Redis) -> None:
        job = await crawl_job(client, {"url": receiver.url(), "events": ["completed", "failed"]})
        assert not await enqueue(client, job, "crawl", "started")
        assert not await enqueue(client, job, "crawl", "page", [doc(1)])
        assert await client.llen(hooks_key(job)) == 0
        assert await enqueue(client, job, "crawl", "completed")
        silent = await crawl_job(client, None)  # no webhook: nothing queued, nothing indexed
        assert not await enqueue(client, silent, "crawl", "started")
        assert await drained(client, silent)
        assert not await enqueue(client, str(uuid.uuid4()), "crawl", "started")  # no such job
        with pytest.raises(ValueError):
            await enqueue(client, job, "crawl", "finished")  # type: ignore[arg-type]
        async with sending(sender(client)):
            await until(lambda: len(receiver.hits) == 1)
            await asyncio.sleep(0.3)
        assert [b["type"] for b in receiver.bodies()] == ["crawl.completed"]
    run(redis_url, body)


def test_signature_verifies_with_the_secret(redis_url: str, receiver: Receiver) -> None:
    secret = "whsec-" + uuid.uuid4().hex

    async def body(client: Redis) -> None:
        job = await crawl_job(client, receiver.url())
        await enqueue(client, job, "crawl", "page", [{"markdown": "é ünïcode", "metadata": {}}])
        async with sending(sender(client, secret=secret)):
            await until(lambda: len(receiver.hits) == 1)
        hit = receiver.hits[0]
        algorithm, _, digest = hit.headers[SIGNATURE_HEADER.lower()].partition("=")
        expected = hmac.new(secret.encode(), hit.raw, hashlib.sha256).hexdigest()
        assert algorithm == "sha256" and hmac.compare_digest(digest, expected)
        assert hit.body["data"][0]["markdown"] == "é ünïcode"
    run(redis_url, body)


def test_retried_with_backoff_until_the_receiver_recovers(redis_url: str, receiver: Receiver) -> None:
    receiver.fail_first = 3

    async def body(client: Redis) -> None:
        job = await crawl_job(client, receiver.url())
        await enqueue(client, job, "crawl", "started")
        await enqueue(client, job, "crawl", "completed")
        async with sending(sender(client, backoff=0.2)):
            await until(lambda: len(receiver.hits) == 5)
        assert await drained(client, job)
        types = [b["type"] for b in receiver.bodies()]
        assert types == ["crawl.started"] * 4 + ["crawl.completed"]  # completed waits its turn
        assert len({b["webhookId"] for b in receiver.bodies()[:4]}) == 1  # one delivery, retried
        gaps = [b.at - a.at for a, b in zip(receiver.hits, receiver.hits[1:4])]
        for gap, backoff in zip(gaps, (0.2, 0.4, 0.8)):
            assert backoff - 0.05 <= gap < backoff + 1.0
    run(redis_url, body)


def test_dropped_after_the_last_retry(redis_url: str, receiver: Receiver) -> None:
    receiver.fail_first = 2

    async def body(client: Redis) -> None:
        job = await crawl_job(client, receiver.url())
        await enqueue(client, job, "crawl", "started")
        await enqueue(client, job, "crawl", "completed")
        async with sending(sender(client, retries=1)):
            await until(lambda: len(receiver.hits) == 3)
        assert [b["type"] for b in receiver.bodies()] == ["crawl.started"] * 2 + ["crawl.completed"]
        assert await drained(client, job)
    run(redis_url, body)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_receiver_refused_unless_allowed(redis_url: str, receiver: Receiver, host: str) -> None:
    async def body(client: Redis) -> None:
        job = await crawl_job(client, receiver.url(host))
        await enqueue(client, job, "crawl", "started")
        async with sending(sender(client, allow=Allowlist())):
            await until_drained(client, job)
        assert receiver.hits == []  # refused, and not retried: the delivery is gone
        await enqueue(client, job, "crawl", "completed")
        async with sending(sender(client, allow=Allowlist.parse([host]))):
            await until(lambda: len(receiver.hits) == 1)
        assert receiver.bodies()[0]["type"] == "crawl.completed"
        assert receiver.hits[0].headers["host"] == f"{host}:{receiver.port}"  # connected by address
    run(redis_url, body)


def self_signed(tmp_path: Path, name: str) -> Path:
    """A certificate for *name* (its own CA), key and certificate in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem


def test_https_keeps_the_name_for_sni_and_the_certificate(redis_url: str, tmp_path: Path) -> None:
    pem = self_signed(tmp_path, "localhost")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pem)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    trust = ssl.create_default_context(cafile=str(pem))

    async def body(client: Redis, receiver: Receiver) -> None:
        named = await crawl_job(client, f"https://localhost:{receiver.port}/hook")
        by_address = await crawl_job(client, f"https://127.0.0.1:{receiver.port}/hook")
        await enqueue(client, named, "crawl", "started")
        await enqueue(client, by_address, "crawl", "started")  # the certificate does not name it
        allow = Allowlist.parse(["localhost", "127.0.0.1"])
        async with sending(sender(client, allow=allow, verify=trust, retries=0)):
            await until(lambda: len(receiver.hits) == 1)
            for job in (named, by_address):
                await until_drained(client, job)
        assert receiver.hits[0].body["id"] == named
        assert receiver.hits[0].headers["host"] == f"localhost:{receiver.port}"
        assert "localhost" in names

    with serving(server_tls) as receiver:
        run(redis_url, lambda client: body(client, receiver))


def test_two_senders_send_each_event_once(redis_url: str, receiver: Receiver) -> None:
    async def body(client: Redis) -> None:
        jobs = [await crawl_job(client, receiver.url()) for _ in range(3)]
        for job in jobs:
            await enqueue(client, job, "crawl", "started")
            for i in range(20):
                await enqueue(client, job, "crawl", "page", [doc(i)])
            await enqueue(client, job, "crawl", "completed")
        async with sending(sender(client, concurrency=4), sender(client, concurrency=4)):
            await until(lambda: len(receiver.hits) >= 66)
            await asyncio.sleep(0.5)  # a duplicate would arrive now
        bodies = receiver.bodies()
        assert len(bodies) == 66 and len({b["webhookId"] for b in bodies}) == 66
        for job in jobs:
            mine = [b for b in bodies if b["id"] == job]
            assert mine[0]["type"] == "crawl.started" and mine[-1]["type"] == "crawl.completed"
            assert sorted(b["data"][0]["markdown"] for b in mine[1:-1]) == sorted(
                f"# page {i}" for i in range(20))
            assert await drained(client, job)
    run(redis_url, body)


def test_a_killed_sender_loses_nothing(redis_url: str, receiver: Receiver) -> None:
    receiver.slow_first = 1.0

    async def body(client: Redis) -> None:
        job = await crawl_job(client, receiver.url())
        await enqueue(client, job, "crawl", "started")
        first = sender(client)
        first.lease_ms = 300
        task = asyncio.create_task(first.run(asyncio.Event()))
        await until(lambda: len(receiver.hits) == 1)
        task.cancel()  # killed mid-send: no settle, no release
        await asyncio.gather(task, return_exceptions=True)
        [entry] = await client.lrange(hooks_key(job), 0, -1)
        assert json.loads(entry.partition(b" ")[2])["attempt"] == 0  # untouched
        assert await client.zscore(HOOKS_KEY, job) is not None  # still claimed, until the lease ends
        async with sending(sender(client)):  # takes the job over once the lease runs out
            await until(lambda: len(receiver.hits) == 2)
            await until_drained(client, job)
        assert len({b["webhookId"] for b in receiver.bodies()}) == 1  # at least once: the same id
    run(redis_url, body)


def test_pending_deliveries_expire_with_the_job(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        job = await crawl_job(client, "http://127.0.0.1:9/hook")
        await enqueue(client, job, "crawl", "started")
        store = JobStore(client)
        expires_at = int((await store.get(job)).expires_at.timestamp() * 1000)  # type: ignore[union-attr]
        assert await client.pexpiretime(hooks_key(job)) == expires_at
        await asyncio.sleep(0.01)
        await store.finish(job, "completed")  # a later write moves the job's expiry ...
        await enqueue(client, job, "crawl", "completed")  # ... and the next push follows it
        expires_at = int((await store.get(job)).expires_at.timestamp() * 1000)  # type: ignore[union-attr]
        assert await client.pexpiretime(hooks_key(job)) == expires_at
        await client.delete(hooks_key(job))
    run(redis_url, body)


def test_settings_from_the_environment(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        sender = WebhookSender.from_env(client, {})
        assert (sender.secret, sender.retries, sender.backoff, sender.timeout, sender.concurrency,
                bool(sender.allow)) == (None, 5, 1.0, 10.0, 8, False)
        sender = WebhookSender.from_env(client, {
            "STATECRAWL_WEBHOOK_SECRET": "s", "STATECRAWL_WEBHOOK_RETRIES": "0",
            "STATECRAWL_WEBHOOK_BACKOFF": "2.5", "STATECRAWL_WEBHOOK_TIMEOUT": "4",
            "STATECRAWL_WEBHOOK_CONCURRENCY": "2", "STATECRAWL_NET_ALLOW": "hooks.internal,10.0.0.0/8"})
        assert (sender.secret, sender.retries, sender.backoff, sender.timeout, sender.concurrency) == (
            "s", 0, 2.5, 4.0, 2)
        assert sender.allow == Allowlist.parse(["hooks.internal", "10.0.0.0/8"])
        for name, value in (("RETRIES", "-1"), ("TIMEOUT", "0"), ("CONCURRENCY", "many")):
            with pytest.raises(ConfigError, match=f"STATECRAWL_WEBHOOK_{name}"):
                WebhookSender.from_env(client, {f"STATECRAWL_WEBHOOK_{name}": value})
    run(redis_url, body)
