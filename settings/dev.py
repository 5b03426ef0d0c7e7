"""Local development: the embedded Redis unless REDIS_URL is set."""

from __future__ import annotations

AUTOTHROTTLE_ENABLED = False
