"""Redis commands of many concurrent callers in one pipelined round trip: stream appends (events,
ready marks), and a request's reply with its acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from transport.envelope import JSONEnvelope


@dataclass(frozen=True)
class Entry:
    """One XADD: the stream, its fields, and the stream's length cap."""

    stream: str
    fields: Mapping[str | bytes, str | bytes]
    maxlen: int
    approximate: bool = True


Commands = Callable[[Pipeline], object]
"""Adds one caller's commands to a pipeline."""


class Pipelined:
    """The commands of the callers of one event-loop turn go in one pipeline; commands given while
    a pipeline is on its way wait for it and go in the next. Each caller returns once its own
    commands have run (or with the error of the first of them that failed), so nothing is left in
    a buffer when the process stops, and a caller may go on knowing they ran: a request is
    answered only after its events are in their stream. One round trip per batch of callers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[tuple[Commands, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(self, commands: Commands) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await done

    async def append(self, entries: Sequence[Entry]) -> None:
        """XADD each entry."""
        if entries:
            await self.run(lambda pipe: _append(pipe, entries))

    async def reply_and_ack(self, reply: tuple[str, bytes] | None, stream: str, group: str, *entry_ids: Any) -> None:
        """PUBLISH a request's reply (`(channel, envelope)`, or none), then XACK its stream entry:
        the two round trips FastStream makes per request, shared with the other requests
        answered in the same loop turn."""

        def commands(pipe: Pipeline) -> None:
            if reply is not None:
                pipe.publish(*reply)
            pipe.xack(stream, group, *entry_ids)

        await self.run(commands)

    async def answer(self, msg: Any, response: Any, group: str) -> None:
        """Reply to the request `msg` (a FastStream stream message) with `response` (a
        `RedisResponse` in the JSON envelope; None: no reply), and acknowledge it in `group`:
        what FastStream does after a handler, for a subscriber with `no_reply` and manual
        acknowledgement, in one round trip shared with the loop turn's other requests."""
        reply = None
        if response is not None and msg.reply_to:
            envelope = await JSONEnvelope.encode(
                message=response.body,
                reply_to=None,
                headers=response.headers,
                correlation_id=response.correlation_id or msg.correlation_id,
            )
            reply = (msg.reply_to, envelope)
        raw = msg.raw_message
        await self.reply_and_ack(reply, raw["channel"], group, *raw["message_ids"])

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the other callers of this loop turn add theirs first
        while self._waiting:
            batch, self._waiting = self._waiting, []
            pipe = self.redis.pipeline(transaction=False)
            ends: list[int] = []
            refused: dict[int, Exception] = {}
            for k, (commands, _) in enumerate(batch):
                try:
                    commands(pipe)
                except Exception as exc:  # a command redis-py would not build: that caller fails alone
                    refused[k] = exc
                ends.append(len(pipe))
            try:
                results = await pipe.execute(raise_on_error=False) if len(pipe) else []
            except asyncio.CancelledError:  # the process stops: nobody waits for nothing
                for _, done in [*batch, *self._waiting]:
                    done.cancel()
                raise
            except Exception as exc:  # the connection failed: every caller of the batch sees it
                results = [exc] * (ends[-1] if ends else 0)
            start = 0
            for k, ((_, done), end) in enumerate(zip(batch, ends, strict=True)):
                error = refused.get(k) or next((r for r in results[start:end] if isinstance(r, Exception)), None)
                start = end
                if done.done():  # its caller was cancelled
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)


def _append(pipe: Pipeline, entries: Sequence[Entry]) -> None:
    for entry in entries:
        pipe.xadd(entry.stream, dict(entry.fields), maxlen=entry.maxlen, approximate=entry.approximate)
