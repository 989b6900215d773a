"""Plain factory functions and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


class Clock:
    """A controllable clock: real time unless frozen; `advance()` moves it forward."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return (self.frozen or datetime.now(UTC)) + self.offset

    def freeze(self, at: datetime | None = None) -> datetime:
        self.frozen = at or datetime.now(UTC)
        return self.frozen

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def unique(name: str = "x") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def make_pool(**overrides: Any) -> dict[str, Any]:
    return {"name": unique("pool"), "type": "process", **overrides}


def make_queue(**overrides: Any) -> dict[str, Any]:
    return {"name": unique("queue"), **overrides}


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
