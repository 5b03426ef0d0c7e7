"""The ``site`` spider's ``-a name=value`` arguments, parsed and checked (:class:`ConfigError`)."""

from __future__ import annotations

from typing import Any

from statecrawl.exceptions import ConfigError

__all__ = ["FORMATS", "bool_arg", "formats_arg", "int_arg", "seconds_arg"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def int_arg(name: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"-a {name}= expects a whole number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"-a {name}= must not be negative, got {number}")
    return number


def seconds_arg(name: str, value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"-a {name}= expects seconds, got {value!r}") from None
    if not 0 <= number < 86400:
        raise ConfigError(f"-a {name}= must be 0 to 86400 seconds, got {number}")
    return number


def bool_arg(name: str, value: Any) -> bool:
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"-a {name}= expects true or false, got {value!r}")


#: Item formats (``-a formats=``); ``links`` are in every item (page metadata).
FORMATS = ("markdown", "html", "raw_html", "links")


def formats_arg(value: str | None) -> frozenset[str]:
    if value is None or not value.strip():
        return frozenset({"markdown", "links"})
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - set(FORMATS)
    if unknown:
        raise ConfigError(f"-a formats= takes {', '.join(FORMATS)}; unknown: "
                          f"{', '.join(sorted(unknown))}")
    return frozenset(names | {"links"})
