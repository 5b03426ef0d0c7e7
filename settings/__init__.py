"""The Scrapy project settings: ``base`` values, then one environment's overrides.

``STATECRAWL_ENV`` picks the environment module (``dev`` by default, or
``prod``). Secrets (the Redis URL and its password) come only from environment
variables, never from these files.
"""

from __future__ import annotations

import importlib
import os

from settings.base import *  # noqa: F403

_env = os.environ.get("STATECRAWL_ENV", "dev")
if _env not in ("dev", "prod"):
    raise ImportError(f"STATECRAWL_ENV={_env!r}: expected 'dev' or 'prod'")
globals().update(
    {k: v for k, v in vars(importlib.import_module(f"settings.{_env}")).items() if k.isupper()}
)
