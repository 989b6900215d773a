"""Stream appends of many concurrent callers in one pipelined Redis round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class Entry:
    """One XADD: the stream, its fields, and the stream's length cap."""

    stream: str
    fields: Mapping[str | bytes, str | bytes]
    maxlen: int
    approximate: bool = True


class PipelinedAppends:
    """XADDs of the callers of one event-loop turn go in one pipeline; an append made while a
    pipeline is on its way waits for it and goes in the next. Each caller returns once its own
    entries are in their streams (or with the error that kept them out), so nothing is left in a
    buffer when the process stops, and a caller may answer only after its entries are appended.
    One Redis command per entry, one round trip per batch of callers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[tuple[Sequence[Entry], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((entries, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await done

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the other callers of this loop turn add theirs first
        while self._waiting:
            batch, self._waiting = self._waiting, []
            pipe = self.redis.pipeline(transaction=False)
            for entries, _ in batch:
                for entry in entries:
                    pipe.xadd(entry.stream, dict(entry.fields), maxlen=entry.maxlen, approximate=entry.approximate)
            try:
                await pipe.execute()
            except asyncio.CancelledError:  # the process stops: nobody waits for nothing
                for _, done in [*batch, *self._waiting]:
                    done.cancel()
                raise
            except Exception as exc:  # the callers see it, as they would for their own XADD
                _settle(batch, exc)
            else:
                _settle(batch, None)


def _settle(batch: list[tuple[Sequence[Entry], asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():  # its caller was cancelled
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
