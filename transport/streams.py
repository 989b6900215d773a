"""How a replica reads a request stream (FastStream's `StreamSub`), in one place: the service's
subscribers and the benchmark's echo replica (bench/echo.py) read alike."""

from __future__ import annotations

from faststream.redis import StreamSub

from schemas.channels import Channels, Op
from schemas.settings import Settings

IDLE_BLOCK_MS = 500
"""How long an idle subscriber's XREADGROUP blocks. A new entry ends the block at once, so this
sets how often an idle subscriber asks again — at FastStream's default (100 ms) the 21 request
streams of an idle replica cost 210 reads a second, a few per cent of a core, which also
counted in every request's CPU — and how long a stop waits for the blocked reads to return
(2 s made a replica's SIGTERM exit too late for its grace period)."""


def request_stream(channels: Channels, op: Op | str, settings: Settings) -> StreamSub:
    """The stream of `op`, read by the request consumer group in batches of `rpc_concurrency`."""
    return StreamSub(
        channels.rpc(op),
        group=channels.rpc_group,
        consumer=settings.consumer_name,
        max_records=settings.rpc_concurrency,
        polling_interval=IDLE_BLOCK_MS,
    )
