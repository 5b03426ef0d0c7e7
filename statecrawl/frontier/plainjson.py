"""Plain JSON, the one format statecrawl keeps in Redis: written strictly, read safely.

:func:`dumps` encodes only plain data -- ``dict`` with ``str`` keys, ``list``
(or ``tuple``), ``str``, ``int``, finite ``float``, ``bool`` and ``None`` --
compactly, and raises :class:`~statecrawl.exceptions.SerializationError`
naming the offending path for anything else (:func:`check_plain`).
:func:`loads` decodes what comes back from the store: only those types and
finite numbers can come out, and any failure is a
:class:`~statecrawl.exceptions.SerializationError`, never anything else.

Requests are built on top of these in :mod:`statecrawl.frontier.serialize`,
which re-exports :func:`dumps` and :func:`loads`; this module imports nothing
from it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from statecrawl.exceptions import SerializationError

__all__ = ["check_plain", "dumps", "loads"]

_MAX_DEPTH = 64


def check_plain(value: Any, path: str, depth: int = 0) -> None:
    """Raise unless *value* is plain JSON data (no NaN, str keys only)."""
    if depth > _MAX_DEPTH:
        raise SerializationError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"{path}: {value!r} is not valid JSON")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{path}: key {k!r} is not a string")
            check_plain(v, f"{path}.{k}", depth + 1)
        return
    raise SerializationError(
        f"{path}: {type(value).__name__} is not plain JSON data "
        "(use str, int, float, bool, None, list or dict)"
    )


def dumps(value: Any, what: str = "value") -> bytes:
    """Encode plain JSON data compactly; raise SerializationError otherwise."""
    check_plain(value, what)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | str, what: str = "value") -> Any:
    """Decode JSON read from the store. Only JSON types (and finite numbers) can come out.

    Any failure (invalid JSON or UTF-8, numbers out of range, nesting too deep
    for the parser) is a :class:`SerializationError`: data from Redis never
    raises anything else here.
    """
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_no_constants)
    except RecursionError:
        raise SerializationError(f"{what}: stored data is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - ValueError, UnicodeDecodeError, TypeError...
        raise SerializationError(f"{what}: stored data is not valid JSON: {exc}") from None
