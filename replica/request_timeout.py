"""A request that runs too long is ended: cancelled (its transaction rolls back) and answered 503."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream import BaseMiddleware

from services.errors import Unavailable

log = logging.getLogger("workpools.requests")


class RequestTimeout(BaseMiddleware):
    """Cancels a request still running after `seconds` and answers it 503 (through the error
    table, which sits outside this middleware); the request metrics count it as a 503 and it is
    logged here, with its stream and correlation id. Its entry is acknowledged with the reply, so
    it is neither kept fresh nor handed to another replica."""

    seconds = 30.0

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            async with asyncio.timeout(self.seconds):
                return await call_next(msg)
        except TimeoutError:
            stream = msg.raw_message.get("channel", "") if isinstance(msg.raw_message, dict) else ""
            log.error(
                "request %s on %s still running after %g s: cancelled and answered 503",
                msg.correlation_id,
                stream,
                self.seconds,
            )
            raise Unavailable(f"Service Unavailable (the request took longer than {self.seconds:g} s)") from None


def request_timeout(seconds: float) -> type[RequestTimeout]:
    return type("RequestTimeoutOf", (RequestTimeout,), {"seconds": seconds})
