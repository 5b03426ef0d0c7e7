"""The Lua scripts' text (``statecrawl/frontier/lua/``), for ``register_script``."""

from __future__ import annotations

from importlib import resources

__all__ = ["script_source"]


def script_source(*names: str) -> str:
    """The text of ``statecrawl/frontier/lua/<name>``, for each name in turn (a script
    after the snippets it uses)."""
    lua = resources.files("statecrawl.frontier").joinpath("lua")
    return "".join(lua.joinpath(name).read_text() for name in names)
