"""Ready marks on `{prefix}.ready`: published after polls in pipelined batches, consumed by its own
consumer group in batches."""

from __future__ import annotations

import asyncio

from faststream.redis import RedisRouter, StreamSub
from redis.asyncio import Redis

from schemas import wire
from schemas.channels import Channels
from schemas.scheduling import ReadyMark
from schemas.settings import Settings
from services import readiness
from services.db import Database
from transport.envelope import JSONEnvelope
from transport.pipelined import Entry, Pipelined
from transport.streams import IDLE_BLOCK_MS

HEADERS = {"content-type": "application/json"}


def register(router: RedisRouter, channels: Channels, settings: Settings, db: Database) -> None:
    @router.subscriber(
        stream=StreamSub(
            channels.ready,
            group=channels.ready_group,
            consumer=settings.consumer_name,
            batch=True,
            max_records=settings.ready_batch,
            polling_interval=IDLE_BLOCK_MS,
        ),
        message_format=JSONEnvelope,
        title=channels.ready,
        description="Ready marks published after each poll: queues and deployments marked polled / READY.",
    )
    async def apply_ready_marks(marks: list[ReadyMark]) -> None:
        await readiness.apply_ready_marks(db, marks)
        # Pace the consumer: marks that arrive meanwhile are merged into the next batch (one
        # update per queue), instead of one transaction per poll when polls come one by one.
        await asyncio.sleep(settings.ready_pause_seconds)


class ReadyMarkPublisher:
    """Publishes ready marks to `{prefix}.ready`, one stream entry per poll, many polls' marks in
    one pipelined round trip (`transport.pipelined`): a poll still answers after its mark is in the
    stream, without FastStream's publish pipeline per mark (its middlewares, a deep copy of the
    stream settings), which cost a sixth of a replica's CPU per poll."""

    def __init__(self, redis: Redis, stream: str, maxlen: int, pipelined: Pipelined | None = None) -> None:
        """`pipelined`: the replica's batcher, shared with its replies (else one of its own)."""
        self.stream, self.maxlen = stream, maxlen
        self._appends = pipelined or Pipelined(redis)

    async def publish(self, mark: ReadyMark) -> None:
        data = wire.encode_raw(mark.model_dump_json().encode(), HEADERS)
        await self._appends.append([Entry(self.stream, {wire.DATA_FIELD: data}, self.maxlen)])
