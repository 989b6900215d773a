"""Background loops of a replica, stopped cleanly even when a driver swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.errors import Unavailable

log = logging.getLogger("workpools.loops")


class Loops:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def every(self, seconds: float, action: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `action` now and then every `seconds` until stopped; a failure is logged and retried."""

        async def loop() -> None:
            while not self.stopping.is_set():
                try:
                    await action()
                except Unavailable as exc:  # a database timeout or outage (counted by the database)
                    log.warning("%s failed: %s; retrying in %.1f s", name, exc.detail, seconds)
                except Exception:
                    log.warning("%s failed; retrying in %.1f s", name, seconds, exc_info=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), seconds)

        self.tasks.append(asyncio.create_task(loop(), name=name))

    def run(self, coroutine: Awaitable[object], name: str) -> None:
        self.tasks.append(asyncio.create_task(coroutine, name=name))

    async def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        _, pending = await asyncio.wait(self.tasks, timeout=timeout) if self.tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        self.tasks.clear()
