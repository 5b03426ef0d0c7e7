"""Settings shared by every environment: statecrawl's worker settings, with this project's spiders."""

from __future__ import annotations

from statecrawl.cli.worker_settings import *  # noqa: F403

SPIDER_MODULES = ["spiders"]
NEWSPIDER_MODULE = "spiders"
