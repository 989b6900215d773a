"""The transport's floor: a replica that only echoes, with no database.

    python -m bench.echo        (settings from WORKPOOLS_*, like `workpools serve`)

It is built like a replica — the same broker (`replica.app.make_broker`: the JSON envelope,
the same connection settings), one request stream read by the same consumer group with the same
batch size and concurrency, replies through `respond` stamped with the replica's name — but its
handler returns the request body. Its CPU per request is the floor the service's own CPU per
request is compared with (bench/targets.py runs both in one run); it hands requests to its
handler as FastStream does. With `WORKPOOLS_ECHO_PIPELINED` set it reads and answers as a replica
does (`PIPELINED_ENV`): the floor of the replica's own transport path."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faststream import AckPolicy, BaseMiddleware, FastStream
from faststream.redis import RedisResponse, RedisRouter
from redis.asyncio import Redis

from replica.app import create_groups, make_broker
from schemas.channels import Channels
from schemas.settings import Settings
from transport.dispatch import task_per_request
from transport.envelope import JSONEnvelope, respond
from transport.pipelined import Pipelined
from transport.streams import request_stream

ECHO = "echo"
"""The operation name of the echo stream: `{prefix}.rpc.echo`."""


PIPELINED_ENV = "WORKPOOLS_ECHO_PIPELINED"
"""Set (to anything) for the echo to read and answer as a replica does: each request started by
the reading task in a task of its own (`transport.dispatch`), instead of FastStream's queue and
task group; its reply and its acknowledgement pipelined with the other requests of the loop turn
(`transport.pipelined`), as the request gate sends them, instead of FastStream's publish and XACK
per request."""


def build_echo_app(settings: Settings) -> FastStream:
    channels = Channels(settings.prefix)
    broker = make_broker(settings, 1)

    stream = request_stream(channels, ECHO, settings)
    if not os.environ.get(PIPELINED_ENV):

        @broker.subscriber(stream=stream, max_workers=settings.rpc_concurrency, message_format=JSONEnvelope)
        async def echo(body: dict[str, Any]) -> RedisResponse:
            return respond(200, body, {"replica": settings.consumer_name})

    else:  # read as a replica reads; the reply and its XACK as the request gate sends them
        settle = Pipelined(Redis.from_url(settings.redis_url))

        class Answer(BaseMiddleware):
            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
                response = await call_next(msg)
                await settle.answer(msg, response, channels.rpc_group)
                return response

        router = RedisRouter(middlewares=[Answer])

        @task_per_request(
            router.subscriber(
                stream=stream,
                max_workers=settings.rpc_concurrency,
                message_format=JSONEnvelope,
                no_reply=True,
                ack_policy=AckPolicy.MANUAL,
            )
        )
        async def echo_pipelined(body: dict[str, Any]) -> RedisResponse:
            return respond(200, body, {"replica": settings.consumer_name})

        broker.include_router(router)

    app = FastStream(broker, logger=logging.getLogger("workpools.echo"))

    @app.on_startup
    async def groups() -> None:
        redis = Redis.from_url(settings.redis_url)
        try:
            await create_groups(redis, [channels.rpc(ECHO)], channels.rpc_group)
        finally:
            await redis.aclose()

    return app


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_echo_app(settings)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


async def probe(redis_url: str, prefix: str) -> None:
    """One echo answered (bench.replicas.ReplicaSet's readiness probe)."""
    from client.transport import RpcTransport

    transport = RpcTransport(redis_url, prefix, timeout=5)
    await transport.connect()
    try:
        status, body = await transport.request(ECHO, {"ping": 1})  # type: ignore[arg-type]
        if status != 200 or body != {"ping": 1}:
            raise RuntimeError(f"echo answered {status} {body!r}")
    finally:
        await transport.close()


def command() -> list[str]:
    return [sys.executable, "-m", "bench.echo"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    from replica.serve import run

    run(serve(Settings()))
