"""Requests whose caller has stopped waiting are dropped unexecuted."""

from __future__ import annotations

import logging
import time
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage

log = logging.getLogger("workpools.requests")


class DropExpired(BaseMiddleware):
    """A request whose caller has given up (`deadline` header passed) is acknowledged unexecuted."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        deadline = msg.headers.get("deadline")
        try:
            expired = deadline is not None and float(deadline) < time.time()
        except ValueError:
            expired = False
        if expired:
            log.info("dropped an expired request %s", msg.correlation_id)
            raise AckMessage()  # acknowledged, and no reply: its caller has stopped waiting
        return await call_next(msg)
