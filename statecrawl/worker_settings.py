"""``statecrawl.worker_settings``: a stable ``SCRAPY_SETTINGS_MODULE``; the settings are
:mod:`statecrawl.cli.worker_settings`."""

from __future__ import annotations

from statecrawl.cli.worker_settings import *  # noqa: F403
