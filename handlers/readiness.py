"""The ready-marker consumer: its own consumer group on `{prefix}.ready`, in batches."""

from __future__ import annotations

import asyncio

from faststream.redis import RedisRouter, StreamSub

from schemas.channels import Channels
from schemas.scheduling import ReadyMark
from schemas.settings import Settings
from services import readiness
from services.db import Database
from transport.envelope import JSONEnvelope
from transport.streams import IDLE_BLOCK_MS


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
