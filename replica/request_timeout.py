"""A request that runs too long is ended: cancelled (its transaction rolls back) and answered 503."""

from __future__ import annotations

import logging
from typing import Any

from services.errors import Unavailable

log = logging.getLogger("workpools.requests")


def timed_out(msg: Any, seconds: float) -> Unavailable:
    """The 503 of a request still running after `seconds`, which the request gate
    (`replica.request_gate`) cancelled; logged here with its stream and correlation id. The
    request metrics count it as a 503, and its entry is acknowledged with the reply, so it is
    neither kept fresh nor handed to another replica."""
    stream = msg.raw_message.get("channel", "") if isinstance(msg.raw_message, dict) else ""
    log.error(
        "request %s on %s still running after %g s: cancelled and answered 503", msg.correlation_id, stream, seconds
    )
    return Unavailable(f"Service Unavailable (the request took longer than {seconds:g} s)")
