"""How a replica reads a request stream (FastStream's `StreamSub`), in one place: the service's
subscribers and the benchmark's echo replica (bench/echo.py) read alike."""

from __future__ import annotations

import copy
from typing import Any

from faststream.redis import StreamSub

from schemas.channels import Channels, Op
from schemas.settings import Settings

IDLE_BLOCK_MS = 500
"""How long an idle subscriber's XREADGROUP blocks. A new entry ends the block at once, so this
sets how often an idle subscriber asks again — at FastStream's default (100 ms) the 21 request
streams of an idle replica cost 210 reads a second, a few per cent of a core, which also
counted in every request's CPU — and how long a stop waits for the blocked reads to return
(2 s made a replica's SIGTERM exit too late for its grace period)."""


class ShallowStreamSub(StreamSub):
    """FastStream's `StreamSub`, copied shallowly. FastStream deep-copies a subscriber's
    `StreamSub` each time it reads it (`add_prefix`): about ten times per XREADGROUP and once per
    message, a tenth of a request's CPU at concurrency 1. Its fields are strings, numbers and
    flags, which a shallow copy copies as well."""

    def __deepcopy__(self, memo: dict[int, Any]) -> ShallowStreamSub:
        return copy.copy(self)

    def add_prefix(self, prefix: str) -> ShallowStreamSub:
        """Itself under no prefix (the service's routers have none: the prefix is in the stream
        names): FastStream only reads the copy it asks for here, so there is nothing to copy."""
        if not prefix:
            return self
        copied: ShallowStreamSub = super().add_prefix(prefix)
        return copied


def request_stream(channels: Channels, op: Op | str, settings: Settings) -> StreamSub:
    """The stream of `op`, read by the request consumer group in batches of `rpc_concurrency`."""
    return ShallowStreamSub(
        channels.rpc(op),
        group=channels.rpc_group,
        consumer=settings.consumer_name,
        max_records=settings.rpc_concurrency,
        polling_interval=IDLE_BLOCK_MS,
    )
