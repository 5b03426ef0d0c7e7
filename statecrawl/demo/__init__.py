"""The bundled demo/test site (see :mod:`statecrawl.demo.site`).

Names are loaded lazily: importing ``site`` here eagerly would make
``python -m statecrawl.demo.site`` warn that the module was already imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DemoSite", "write_site"]

if TYPE_CHECKING:
    from statecrawl.demo.site import DemoSite, write_site


def __getattr__(name: str) -> Any:
    if name in __all__:
        from statecrawl.demo import site

        return getattr(site, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
