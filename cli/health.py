"""`workpools health`: does any replica answer this prefix, and which ones.

Sends a few cheap reads at once (every reply names its `replica`) and, where Redis allows it
(XINFO), lists the consumers of the request streams with how long each has been idle, and the
foreman. Exits 0 when a replica answered, 3 when none did within `--timeout`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.table import Table

from cli.connection import Target, connected, with_redis
from cli.output import ExitCode, Output, OutputOpt, cell, emit, fail, waiting
from client.errors import ServiceUnavailable
from client.transport import RpcTransport
from schemas.channels import Op


class Replica(BaseModel):
    name: str
    replies: int
    """Probe requests it answered."""
    fastest_ms: float | None
    idle_seconds: float | None
    """Since it last read a request stream (None when Redis does not tell)."""
    foreman: bool


class Health(BaseModel):
    prefix: str
    redis: str
    answering: bool
    replicas: list[Replica]


@connected
def health(
    probes: Annotated[int, typer.Option(min=1, max=100, help="Requests sent at once to find the replicas.")] = 8,
    output: OutputOpt = Output.table,
) -> None:
    """Which replicas answer this prefix (and the consumers Redis knows of)."""
    with waiting("Asking the replicas…"):
        report = with_redis(lambda redis, where: check(redis, where, probes))
    if report.replicas or output is not Output.table:
        emit(report, output, lambda: health_table(report))
    if not report.answering:
        fail(
            f'No replica answered on prefix "{report.prefix}" at {report.redis}: start `workpools serve` with '
            f"WORKPOOLS_PREFIX={report.prefix}, or check --prefix and --redis-url.",
            ExitCode.UNREACHABLE,
        )


async def check(redis: Redis, where: Target, probes: int) -> Health:
    transport = RpcTransport(where.redis_url, where.prefix, timeout=where.timeout, owner="health")
    await transport.connect()
    try:
        answers = await asyncio.gather(*(probe(transport) for _ in range(probes)))
    finally:
        await transport.close()
    fastest: dict[str, float] = {}
    replies: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            name, seconds = answer
            replies[name] = replies.get(name, 0) + 1
            fastest[name] = min(seconds, fastest.get(name, seconds))
    idle = await consumers(redis, where)
    foreman = await _foreman(redis, where)
    names = sorted(set(replies) | set(idle))
    return Health(
        prefix=where.prefix,
        redis=where.address,
        answering=bool(replies),
        replicas=[
            Replica(
                name=name,
                replies=replies.get(name, 0),
                fastest_ms=round(fastest[name] * 1000, 2) if name in fastest else None,
                idle_seconds=idle.get(name),
                foreman=name == foreman,
            )
            for name in names
        ],
    )


async def probe(transport: RpcTransport) -> tuple[str, float] | None:
    started = time.perf_counter()
    try:
        status, _, headers = await transport.exchange(Op.COUNT_WORK_POOLS, {})
    except ServiceUnavailable:
        return None
    return headers.get("replica", "?"), time.perf_counter() - started


async def consumers(redis: Redis, where: Target) -> dict[str, float]:
    """Consumer name -> seconds since it last read, over every request stream (if allowed)."""
    idle: dict[str, float] = {}
    for op in Op:
        try:
            found = await redis.xinfo_consumers(where.channels.rpc(op), where.channels.rpc_group)
        except ResponseError:  # no such stream or group, or no XINFO right
            continue
        for consumer in found:
            name = _text(consumer.get("name"))
            seconds = int(consumer.get("idle", 0)) / 1000
            idle[name] = min(seconds, idle.get(name, seconds))
    return idle


async def _foreman(redis: Redis, where: Target) -> str | None:
    try:
        holder = await redis.get(where.channels.foreman_lease)
    except ResponseError:
        return None
    return _text(holder) if holder else None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def health_table(report: Health) -> Table:
    title = f'Replicas of prefix "{report.prefix}" at {report.redis}'
    table = Table("Replica", "Answered", "Fastest (ms)", "Idle (s)", "Foreman", title=cell(title))
    for replica in report.replicas:
        table.add_row(
            cell(replica.name),
            cell(replica.replies),
            cell(replica.fastest_ms),
            cell(replica.idle_seconds),
            cell("yes" if replica.foreman else ""),
        )
    return table
