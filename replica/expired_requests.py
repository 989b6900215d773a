"""Requests whose caller has stopped waiting are dropped unexecuted — judged by the clock of the
Redis server that accepted them, so a caller's skewed clock never has its requests dropped."""

from __future__ import annotations

import logging
import time
from typing import Any

from faststream.exceptions import AckMessage

from schemas import wire

log = logging.getLogger("workpools.requests")

SKEW_WARNING_EVERY_SECONDS = 60.0


def entry_seconds(entry_id: bytes | str) -> float | None:
    """The time in a stream entry id (`<ms>-<seq>`, the Redis server's clock), in unix seconds."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    try:
        return int(text.split("-", 1)[0]) / 1000
    except ValueError:
        return None


def expires_at(headers: dict[str, Any], entered: float | None) -> float | None:
    """When the caller stops waiting, in unix seconds, or None (serve it whenever it comes).

    `timeout` (seconds) counts from when the request entered its stream (`entered`, the Redis
    server's clock): no client clock is involved. An absolute `deadline` is the caller's clock; it
    is trusted only if it lies after the request entered — one before that means the caller's
    clock is behind, and the request is served rather than dropped."""
    try:
        timeout = float(headers["timeout"]) if "timeout" in headers else None
        deadline = float(headers["deadline"]) if "deadline" in headers else None
    except (TypeError, ValueError):
        return None
    if timeout is not None and entered is not None:
        return entered + timeout
    if deadline is None or (entered is not None and deadline <= entered):
        return None
    return deadline


class DropExpired:
    """A request whose caller has given up is acknowledged unexecuted: logged (WARNING, with how
    late it was) and counted by the request metrics (`status="expired"`)."""

    _last_skew_warning = 0.0

    @classmethod
    def check(cls, msg: Any, headers: dict[str, Any]) -> None:
        """Raises `AckMessage` (acknowledged, no reply) when `msg`'s caller has stopped waiting."""
        if "timeout" not in headers and "deadline" not in headers:
            return  # served whenever it comes
        entered = _entered(headers, msg.raw_message)
        expiry = expires_at(headers, entered)
        now = time.time()
        if expiry is not None and expiry < now:
            log.warning(
                "dropped request %s unexecuted: its caller stopped waiting %.3f s ago (it entered %.3f s ago)",
                msg.correlation_id,
                now - expiry,
                now - entered if entered is not None else float("nan"),
            )
            raise AckMessage()  # acknowledged, and no reply: its caller has stopped waiting
        if expiry is None and "deadline" in headers and "timeout" not in headers:
            cls._warn_skew(headers, entered)

    @classmethod
    def _warn_skew(cls, headers: dict[str, Any], entered: float | None) -> None:
        now = time.monotonic()
        if now - cls._last_skew_warning >= SKEW_WARNING_EVERY_SECONDS:
            cls._last_skew_warning = now
            log.warning(
                "a request's deadline %s is before it entered the stream (%s): the caller's clock is behind; "
                "served anyway (send `timeout` instead of `deadline`)",
                headers.get("deadline"),
                entered,
            )


def _entered(headers: dict[str, Any], raw: Any) -> float | None:
    """When the request first entered its stream: the `entered` header the reclaimer carries
    along, else the entry's own id."""
    if wire.ENTERED_HEADER in headers:
        try:
            return float(headers[wire.ENTERED_HEADER])
        except (TypeError, ValueError):
            pass
    ids = raw.get("message_ids") if isinstance(raw, dict) else None
    return entry_seconds(ids[0]) if ids else None
