"""Logging: plain text, or one JSON object per line (`WORKPOOLS_LOG_FORMAT=json`).

While a request is handled, its operation, correlation id and request id are in `request_ids`
(a context variable), so every line logged meanwhile carries them — unexpected errors included.
Log lines hold names and ids, never a URL or credential (the settings keep URLs out of reprs).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_ids: ContextVar[dict[str, str] | None] = ContextVar("workpools_request_ids", default=None)
"""operation, correlation_id, request_id of the request being handled."""

FIELDS = ("operation", "correlation_id", "request_id", "replica", "status", "duration_ms")
"""Extra fields a log call may pass (`extra={...}`) that the JSON line carries."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request's ids, and the
    exception's type and traceback when there is one."""

    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.replica:
            line["replica"] = self.replica
        ids = request_ids.get()
        if ids:
            line.update(ids)
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, log_format: str, replica: str | None = None) -> None:
    """Root logging for a `workpools` command. In JSON, FastStream's own loggers (which do not
    propagate) write JSON lines too."""
    if log_format != "json":
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
        return
    formatter = JsonFormatter(replica)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # FastStream logs through these two without propagating; give them JSON handlers first
    # (FastStream adds its own only where no stdout handler exists).
    for name, stream in (("faststream", sys.stderr), ("faststream.access.redis", sys.stdout)):
        logger = logging.getLogger(name)
        own = logging.StreamHandler(stream)
        own.setFormatter(formatter)
        logger.handlers[:] = [own]
        logger.propagate = False
