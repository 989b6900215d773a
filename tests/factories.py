"""Plain factory functions and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.errors import Unavailable


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


async def pids_after_a_drop(begin: Callable[[], Any], backend: Any) -> list[Any]:
    """Two tries of `backend` (a statement returning `pid`) in blocks `begin()` opens, after
    PostgreSQL dropped a connection: each the backend pid, or the text of a 503. asyncpg may not
    have read the server's goodbye yet, so the first may be a 503 and the second must not."""
    answers: list[Any] = []
    for _ in range(2):
        try:
            async with begin() as tx:
                answers.append((await tx.fetchrow(backend, {}))["pid"])
        except Unavailable as exc:
            answers.append(str(exc))
    return answers
