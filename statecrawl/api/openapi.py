"""``GET /openapi.json``: the API's OpenAPI 3.1 document.

Request bodies are generated from the pydantic models (:data:`statecrawl.api.models_v1.REQUESTS`,
so the schema cannot drift from what the server checks); the paths are those
:func:`statecrawl.api.app.create_app` routes. Response bodies are described
in words: their builders in :mod:`statecrawl.api.responses` are shaped by
what the Firecrawl SDKs parse, not by models.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from statecrawl.api.models_v1 import REQUESTS

__all__ = ["openapi_schema"]

_REF = "#/components/schemas/{model}"
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_ERROR_SCHEMA = {"type": "object", "required": ["success", "error"], "properties": {
    "success": {"const": False}, "error": {"type": "string"}, "code": {"type": "string"},
    "details": {"type": "array", "items": {"type": "object"}}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [{"name": "skip", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
         {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                     "default": 100}}]
_START = {"scrape": "Scrape one page", "crawl": "Start a crawl", "map": "Map a site's URLs",
          "batch": "Start a batch scrape"}


def _ok(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


_FAILED = {"408": {**_ERROR, "description": "No scrape worker answered within the timeout"},
           "500": {**_ERROR, "description": "The page could not be fetched"}}
#: endpoints answered by scrape workers: their 200 and error answers
_SERVED = {"scrape": {"200": _ok("{success, data: document}"), **_FAILED},
           "map": {"200": _ok("{success, links, warning?}"), **_FAILED},
           "crawl": {"200": _ok("{success, id, url}: the job exists; the same "
                                "x-idempotency-key answers the same job")},
           "batch": {"200": _ok("{success, id, url, invalidURLs?}: the job exists; the same "
                                "x-idempotency-key answers the same job")}}
_IDEMPOTENCY = [{"name": "x-idempotency-key", "in": "header", "required": False,
                 "schema": {"type": "string", "maxLength": 256}}]


def _paths(version: str, refs: dict[tuple[str, str], str]) -> dict[str, Any]:
    common = {"401": _ERROR, "429": {**_ERROR, "description": "Rate or concurrency limit (RATE_LIMITED, "
                                                          "CONCURRENCY_LIMITED); see Retry-After"},
              "503": _ERROR}
    paths: dict[str, Any] = {}
    for endpoint, summary in _START.items():
        path = f"/{version}/{'batch/scrape' if endpoint == 'batch' else endpoint}"
        paths[path] = {"post": {
            "summary": summary, "operationId": f"{version}_{endpoint}_start",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "$ref": refs[(version, endpoint)]}}}},
            **({"parameters": _IDEMPOTENCY} if endpoint in ("crawl", "batch") else {}),
            "responses": {"400": _ERROR, "413": _ERROR, **_SERVED[endpoint], **common}}}
    for kind, path in (("crawl", "crawl"), ("batch", "batch/scrape")):
        base = f"/{version}/{path}/{{id}}"
        paths[base] = {
            "get": {"summary": f"Status and documents of a {kind} job, a page at a time",
                    "operationId": f"{version}_{kind}_status", "parameters": [_ID, *_PAGE],
                    "responses": {"200": _ok("Status page; `next` links the next page"),
                                  "400": _ERROR, "404": _ERROR, **common}},
            "delete": {"summary": f"Cancel a {kind} job", "operationId": f"{version}_{kind}_cancel",
                       "parameters": [_ID],
                       "responses": {"200": _ok("{success, status}"), "404": _ERROR,
                                     **({"409": _ERROR} if kind == "crawl" else {}), **common}},
        }
        paths[base + "/errors"] = {"get": {
            "summary": f"Failed pages and robots-blocked URLs of a {kind} job",
            "operationId": f"{version}_{kind}_errors", "parameters": [_ID],
            "responses": {"200": _ok("{errors, robotsBlocked}"), "404": _ERROR, **common}}}
    paths[f"/{version}/crawl/active"] = {"get": {
        "summary": "Running crawls", "operationId": f"{version}_crawl_active",
        "responses": {"200": _ok("{success, crawls}"), **common}}}
    return paths


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document (built once per process)."""
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in REQUESTS.values()]
    keys, defs = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    refs = {route: keys[(model, "validation")]["$ref"] for route, model in REQUESTS.items()}
    schemas["Error"] = _ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "statecrawl", "version": "1",
                 "description": "Firecrawl-compatible API (v1 and v2) over statecrawl's Redis job store."},
        "paths": {**_paths("v2", refs), **_paths("v1", refs)},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "one of STATECRAWL_API_KEYS; needed only when keys are set"}}},
        "security": [{"bearer": []}, {}],
    }
