"""Production: politer defaults; REDIS_URL must come from the environment."""

from __future__ import annotations

AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
LOG_LEVEL = "INFO"
