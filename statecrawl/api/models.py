"""The v2 request bodies of the Firecrawl-compatible API, parsed and checked.

Bodies are camelCase on the wire, as Firecrawl's. Every model *ignores*
fields it does not know: the SDKs send keys a given server version has never
heard of (``maxAge``, ``storeInCache``, ``integration``, ``origin``...), and a
strict schema would break every client one release ahead. Only the fields we
honour are checked, strictly: a string where a number belongs is a 400, not a
coercion (``"10"`` is not 10; ``10.0`` is). :func:`bad_request_body` turns the
:class:`pydantic.ValidationError` into the 400 body.

URLs: a URL without ``scheme://`` gets ``http://`` (as Firecrawl does); any
scheme other than http/https, or a URL without a host, is refused with a
message saying which.

Formats: each is a name (``"markdown"``) or an object with a ``type``
(``{"type": "screenshot", "fullPage": true}``); ``"screenshot@fullPage"``
and the SDK's snake_case names are understood. Formats we do not produce
(``json``, ``summary``, ``changeTracking``...) are kept, and reported by
:attr:`ScrapeOptions.unsupported_formats`; they are not an error.

``headers`` (sent to the target site) pass through: :meth:`Body.stored`, the
form a job store keeps, leaves them out.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
    field_validator, model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "SUPPORTED_FORMATS", "BatchScrapeRequest", "Body", "CrawlRequest", "Format", "MapRequest",
    "ScrapeOptions", "ScrapeRequest", "Webhook", "bad_request_body", "check_url",
]

#: Formats statecrawl produces; any other name is accepted and reported as unsupported.
SUPPORTED_FORMATS = frozenset({"markdown", "html", "rawHtml", "links", "screenshot"})
_FORMAT_ALIASES = {"raw_html": "rawHtml", "change_tracking": "changeTracking"}
_SCHEME = re.compile(r"^[^.:/]+://")
_OPAQUE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?![0-9])")  # mailto:, javascript: (not host:port)


def check_url(value: Any) -> str:
    """*value* as an absolute http(s) URL (``http://`` added when no scheme is given)."""
    if not isinstance(value, str):
        raise PydanticCustomError("url_type", "URL must be a string")
    text = value.strip()
    if not text:
        raise PydanticCustomError("url_empty", "URL must not be empty")
    if not _SCHEME.match(text):
        if _OPAQUE.match(text):
            raise PydanticCustomError("url_scheme", "URL must use http or https, not {scheme}",
                                      {"scheme": text.split(":", 1)[0]})
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise PydanticCustomError("url_scheme", "URL must use http or https, not {scheme}",
                                  {"scheme": parts.scheme})
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise PydanticCustomError("url_port", "URL has an invalid port") from None
    if not host or parts.netloc.endswith(":") or any(c.isspace() for c in parts.netloc):
        raise PydanticCustomError("url_host", "URL must have a host, as in https://example.com/")
    return text


def _whole(value: Any) -> Any:
    """10.0 is 10 (JSON numbers have no int type); anything else goes to the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _regexes(value: list[str]) -> list[str]:
    for i, pattern in enumerate(value):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PydanticCustomError("regex", "pattern {index} is not a valid regular expression: {why}",
                                      {"index": i, "why": str(exc)}) from None
    return value


Url = Annotated[str, BeforeValidator(check_url)]
Int = Annotated[int, BeforeValidator(_whole)]
Regexes = Annotated[list[str], AfterValidator(_regexes)]
Sitemap = Literal["skip", "include", "only"]
WebhookEvent = Literal["completed", "failed", "page", "started"]
_EVENTS: tuple[WebhookEvent, ...] = ("completed", "failed", "page", "started")


class Body(BaseModel):
    """Base of every request body: camelCase aliases, unknown fields ignored, strict types."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              strict=True)

    #: field names :meth:`stored` leaves out (secrets, v1 names already mapped)
    _unstored: ClassVar[frozenset[str]] = frozenset({"headers"})

    def stored(self) -> dict[str, Any]:
        """The body as a job store keeps it: camelCase, canonical, without ``headers``."""
        data = self.model_dump(by_alias=True, exclude=set(self._unstored), exclude_none=True)
        options = data.get("scrapeOptions")
        if isinstance(options, dict):
            options.pop("headers", None)
        return data


class Format(Body):
    """One requested format; ``full_page`` only means something for screenshots."""

    type: str
    full_page: bool = False

    @property
    def supported(self) -> bool:
        return self.type in SUPPORTED_FORMATS


def _format(item: Any) -> Format:
    if isinstance(item, str):
        if item == "screenshot@fullPage":
            return Format(type="screenshot", full_page=True)
        return Format(type=_FORMAT_ALIASES.get(item, item))
    if isinstance(item, dict) and isinstance(item.get("type"), str):
        kind: str = item["type"]
        name = _FORMAT_ALIASES.get(kind, kind)
        full_page = item.get("fullPage", item.get("full_page", False))
        if not isinstance(full_page, bool):
            raise PydanticCustomError("format", "fullPage must be true or false")
        return Format(type=name, full_page=full_page and name == "screenshot")
    raise PydanticCustomError("format", "a format is a name or an object with a string 'type'")


class ScrapeOptions(Body):
    """How each page is scraped: v2 ``scrapeOptions``, and the top level of scrape/batch bodies."""

    formats: list[Format] = Field(default_factory=lambda: [Format(type="markdown")])
    only_main_content: bool = True
    include_tags: list[str] | None = None
    exclude_tags: list[str] | None = None
    headers: dict[str, str] | None = None
    wait_for: Int = Field(default=0, ge=0, le=60_000)
    timeout: Int | None = Field(default=None, gt=0)

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # the strict list check reports it
        seen: dict[str, Format] = {}
        for i, item in enumerate(value):
            try:
                fmt = _format(item)
            except PydanticCustomError as exc:
                raise PydanticCustomError(exc.type, f"format {i}: {exc.message()}") from None
            if fmt.type not in seen or fmt.full_page:
                seen[fmt.type] = fmt
        return list(seen.values())

    @model_validator(mode="after")
    def _wait_within_timeout(self) -> ScrapeOptions:
        if self.timeout is not None and self.wait_for > self.timeout / 2:
            raise PydanticCustomError("wait_for", "waitFor must not exceed half of timeout")
        return self

    @property
    def format_names(self) -> list[str]:
        """The supported formats requested, in request order."""
        return [f.type for f in self.formats if f.supported]

    @property
    def unsupported_formats(self) -> list[str]:
        """Requested formats statecrawl does not produce (reported in a warning, not refused)."""
        return [f.type for f in self.formats if not f.supported]

    @property
    def screenshot_full_page(self) -> bool:
        return any(f.type == "screenshot" and f.full_page for f in self.formats)


class ScrapeRequest(ScrapeOptions):
    """POST /v2/scrape."""

    url: Url


class Webhook(Body):
    """Where job events are POSTed. Its ``headers`` are kept: sending the webhook later needs them."""

    url: Url
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    events: list[WebhookEvent] = Field(default_factory=lambda: list(_EVENTS))

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class CrawlRequest(Body):
    """POST /v2/crawl."""

    url: Url
    include_paths: Regexes = Field(default_factory=list)
    exclude_paths: Regexes = Field(default_factory=list)
    regex_on_full_url: bool = Field(default=False, alias="regexOnFullURL")
    max_discovery_depth: Int | None = Field(default=None, ge=0)
    limit: Int = Field(default=10_000, gt=0)
    crawl_entire_domain: bool = False
    allow_subdomains: bool = False
    allow_external_links: bool = False
    sitemap: Sitemap = "include"
    ignore_query_parameters: bool = False
    ignore_robots_txt: bool = False
    delay: float | None = Field(default=None, gt=0)
    max_concurrency: Int | None = Field(default=None, gt=0)
    scrape_options: ScrapeOptions = Field(default_factory=ScrapeOptions)
    webhook: Webhook | None = None


class MapRequest(Body):
    """POST /v2/map."""

    url: Url
    search: str | None = None
    include_subdomains: bool = True
    ignore_query_parameters: bool = True
    sitemap: Sitemap = "include"
    limit: Int = Field(default=5000, ge=1, le=30_000)
    timeout: Int | None = Field(default=None, gt=0)


class BatchScrapeRequest(ScrapeOptions):
    """POST /v2/batch/scrape. With ``ignoreInvalidURLs`` (the v2 default) bad URLs are dropped
    and listed in :attr:`invalid_urls` (the start response's ``invalidURLs``); without, a 400."""

    ignore_invalid_urls: bool = Field(default=True, alias="ignoreInvalidURLs")
    urls: list[str]
    invalid_urls: list[str] = Field(default_factory=list, exclude=True)
    max_concurrency: Int | None = Field(default=None, gt=0)
    webhook: Webhook | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_urls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k not in ("invalid_urls", "invalidUrls")}
        ignore = data.get("ignoreInvalidURLs", data.get("ignore_invalid_urls",
                          cls.model_fields["ignore_invalid_urls"].default))
        if ignore is not True or not isinstance(data.get("urls"), list):
            return data  # each URL is checked by _urls, a bad one is a 400
        good, bad = [], []
        for item in data["urls"]:
            try:
                good.append(check_url(item))
            except PydanticCustomError:
                bad.append(item if isinstance(item, str) else repr(item))
        return {**data, "urls": good, "invalid_urls": bad}

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        checked = []
        for i, item in enumerate(value):
            try:
                checked.append(check_url(item))
            except PydanticCustomError as exc:
                raise PydanticCustomError(exc.type, f"URL {i}: {exc.message()}") from None
        if not checked:
            raise PydanticCustomError("urls_empty", "urls must hold at least one valid URL")
        return checked


def bad_request_body(exc: ValidationError) -> dict[str, Any]:
    """The 400 body for a body that failed validation (input values are not echoed back)."""
    details = [{"code": e["type"], "path": [str(p) for p in e["loc"]],
                "message": "the body must be a JSON object" if e["type"] == "model_type" else e["msg"]}
               for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    return {"success": False, "code": "BAD_REQUEST", "error": "Bad Request", "details": details}
