"""Request bodies as firecrawl-py 4.54.0 builds them, and a fake transport for its parsers.

The SDK's own request builders run without a server: the v2 ``_prepare_*``
functions return the body; the v1 client's ``_post_request`` is replaced by a
recorder. Its response parsers get a fake HTTP client that answers from a
function, so the bodies built by :mod:`statecrawl.api.responses` go through
the very code that reads them in the field.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from firecrawl.v1.client import V1FirecrawlApp


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self._body = status, body
        self.ok = status < 400
        self.text = json.dumps(body)

    def json(self) -> Any:
        return self._body


class FakeClient:
    """Stands in for the SDK's HttpClient: ``answer(method, url) -> (status, body)``."""

    def __init__(self, answer: Callable[[str, str], tuple[int, Any]], max_calls: int = 100) -> None:
        self.answer, self.calls, self.max_calls = answer, [], max_calls

    def _call(self, method: str, url: str) -> FakeResponse:
        self.calls.append((method, url))
        assert len(self.calls) <= self.max_calls, "the SDK kept polling"
        return FakeResponse(*self.answer(method, url))

    def get(self, url: str, **_: Any) -> FakeResponse:
        return self._call("GET", url)

    def delete(self, url: str, **_: Any) -> FakeResponse:
        return self._call("DELETE", url)

    def post(self, url: str, data: Any = None, **_: Any) -> FakeResponse:
        return self._call("POST", url)


def v1_body(method: str, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The (body, headers) the v1 client's *method* would POST."""
    app = V1FirecrawlApp(api_key="fc-test", api_url="http://api.invalid")
    sent: list[tuple[dict[str, Any], dict[str, str]]] = []

    def record(url: str, data: dict[str, Any], headers: dict[str, str], *a: Any, **k: Any) -> FakeResponse:
        sent.append((data, headers))
        return FakeResponse(200, {"success": True, "id": "x", "url": "http://api.invalid/v1/crawl/x"})

    app._post_request = record  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the v1 client uses pydantic's .dict()
        getattr(app, method)(*args, **kwargs)
    return sent[0]
