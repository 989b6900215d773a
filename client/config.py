"""Where a client connects when not told: the same `WORKPOOLS_*` variables as the service."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

REDIS_URL_VARIABLE = "WORKPOOLS_REDIS_URL"
PREFIX_VARIABLE = "WORKPOOLS_PREFIX"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "workpools"


def redis_url_or_default(redis_url: str | None) -> str:
    return redis_url or os.environ.get(REDIS_URL_VARIABLE) or DEFAULT_REDIS_URL


def prefix_or_default(prefix: str | None) -> str:
    return prefix or os.environ.get(PREFIX_VARIABLE) or DEFAULT_PREFIX


def redis_address(redis_url: str) -> str:
    """The URL's scheme, host, port and database, never its credentials (safe to print)."""
    try:
        parts = urlsplit(redis_url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "Redis (an unreadable URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"
