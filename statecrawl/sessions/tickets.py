"""Service requests' tickets: skip what nobody waits for, send the caller's headers, keep them nowhere.

A request of a service crawl (``meta["statecrawl_service"]`` = its request
id, :mod:`statecrawl.frontier.service`) has a *ticket* in Redis while its
caller waits. :class:`ServiceTicketMiddleware` reads it just before the
download:

* no ticket: the caller timed out or went away, so the page is not fetched
  (``IgnoreRequest``; stat ``statecrawl/service_expired``);
* a ticket holding ``{"headers": {...}}`` (JSON, a Fernet token with
  ``STATECRAWL_SECRET_KEY``, see :mod:`statecrawl.sessions.crypto`): those
  headers are set on the request for this download only. As with
  :mod:`statecrawl.sessions.passthrough`, the request's own header values
  are put back before the response or error travels through the middlewares
  that may schedule a copy (retry, redirect), so the headers never reach
  the frontier; they live in the ticket alone, which the worker deletes as
  it pushes the reply (the caller, if it gives up first; it expires with the
  caller's timeout anyway).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest

from statecrawl.exceptions import SecretKeyError
from statecrawl.frontier.service import SERVICE_META_KEY, read_ticket
from statecrawl.frontier.state import WorkerState
from statecrawl.sessions.crypto import Sealer
from statecrawl.sessions.passthrough import RestoresHeaders

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

__all__ = ["ServiceTicketMiddleware"]

logger = logging.getLogger(__name__)

_SAVED = "_statecrawl_ticket_saved"  # worker-local: header values before the caller's


class ServiceTicketMiddleware(RestoresHeaders):
    """See the module docstring. Does nothing to requests without ``meta["statecrawl_service"]``."""

    saved_key = _SAVED

    def __init__(self, crawler: Crawler, sealer: Sealer) -> None:
        self.crawler, self.sealer = crawler, sealer
        self.state = WorkerState.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ServiceTicketMiddleware:
        return cls(crawler, Sealer.from_settings(crawler.settings))

    async def process_request(self, request: Request) -> None:
        request_id = request.meta.get(SERVICE_META_KEY)
        if not isinstance(request_id, str) or _SAVED in request.meta:
            return
        store, client = self.state.store, self.state.client
        if store is None or client is None:
            return
        ticket = await read_ticket(client, store, request_id)
        if ticket is None:
            self.crawler.stats.inc_value("statecrawl/service_expired")
            raise IgnoreRequest(f"service request {request_id}: its caller is gone")
        if not ticket:
            return
        try:
            secret: Any = json.loads(self.sealer.open(ticket, "the request's headers"))
        except (SecretKeyError, ValueError) as exc:
            raise IgnoreRequest(f"service request {request_id}: unreadable ticket ({exc})") from None
        headers = secret.get("headers") if isinstance(secret, dict) else None
        saved: dict[str, list[bytes]] = {}
        for name, value in (headers or {}).items():
            saved[str(name)] = request.headers.getlist(str(name))
            request.headers[str(name)] = str(value)
        request.meta[_SAVED] = saved

