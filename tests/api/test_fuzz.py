"""Bodies generated from ``/openapi.json`` (hypothesis) against a real ``statecrawl serve``.

For every start endpoint (v1 and v2: scrape, crawl, map, batch scrape), bodies
built from the schema's own property names with values of any JSON type, plus
bodies that are not objects or not JSON at all. The contract: never a 500, and
every answer is JSON; a body the models refuse is a 400 with ``details``; one
they accept starts a job (crawl, batch: 200 ``{success, id, url}``). Scrape and
map bodies that are valid are not sent (no scrape worker runs here: they would
wait out their timeout); the models' own tests cover them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from statecrawl.api import parse_request
from tests.api._serve import Serve, http, serve
from tests.conftest import RedisServer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(["https://example.com/", "markdown", "-1", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve(redis_server.url, tmp_path_factory.mktemp("fuzz")) as server:
        yield server


def _routes() -> list[tuple[str, str, list[str]]]:
    """(version, endpoint, property names) of every start route, read from the served schema."""
    from statecrawl.api.openapi import openapi_schema

    schema = openapi_schema()
    routes = []
    for path, item in schema["paths"].items():
        post = item.get("post")
        if not post:
            continue
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        properties = list(schema["components"]["schemas"][ref].get("properties", {}))
        version, rest = path.lstrip("/").split("/", 1)
        routes.append((version, "batch" if rest == "batch/scrape" else rest, properties))
    return routes


ROUTES = _routes()


def bodies(properties: list[str]) -> st.SearchStrategy[Any]:
    known = st.dictionaries(st.sampled_from(properties), JSON, max_size=6)
    valid_url = st.fixed_dictionaries({"url": st.just("https://example.com/")}) | st.fixed_dictionaries(
        {"urls": st.lists(st.sampled_from(["https://example.com/a", "nope", 3]), max_size=3)})
    mixed = st.tuples(valid_url, known).map(lambda pair: {**pair[0], **pair[1]})
    return known | mixed | JSON


def test_the_schema_lists_every_start_route() -> None:
    assert {(v, e) for v, e, _ in ROUTES} == {(v, e) for v in ("v1", "v2")
                                              for e in ("scrape", "crawl", "map", "batch")}


@pytest.mark.parametrize(("version", "endpoint", "properties"), ROUTES,
                         ids=[f"{v}-{e}" for v, e, _ in ROUTES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_bodies_get_a_400_or_a_job_never_a_500(
        api: Serve, version: str, endpoint: str, properties: list[str], data: st.DataObject) -> None:
    body = data.draw(bodies(properties))
    try:
        parse_request(version, endpoint, body)
        valid = True
    except ValidationError:
        valid = False
    assume(not (valid and endpoint in ("scrape", "map")))
    path = "batch/scrape" if endpoint == "batch" else endpoint
    status, answer, _ = http("POST", f"{api.url}/{version}/{path}", body, timeout=15)
    assert status in (200, 400), (status, body, answer)
    assert isinstance(answer, dict), answer
    if valid:
        assert status == 200 and answer["success"] is True and answer["id"], (body, answer)
    else:
        assert status == 400 and answer["success"] is False and answer["details"], (body, answer)


@given(raw=st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bodies_that_are_not_json_are_400(api: Serve, raw: bytes) -> None:
    try:
        json.loads(raw)
        assume(False)
    except ValueError:
        pass
    status, answer, _ = http("POST", f"{api.url}/v2/crawl", raw)
    assert status == 400 and isinstance(answer, dict) and answer["success"] is False, (raw, answer)
