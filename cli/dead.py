"""`workpools dead ls | show | replay`: dead letters, the requests never answered.

A request that no replica answered after `WORKPOOLS_MAX_DELIVERIES` deliveries (or an entry
that could not be read) is moved to the `{prefix}.dead` stream with the reason. `replay` sends
a request again on its stream under its original request id (so a write that did happen is
not done twice: its first reply comes back), waits for the reply, and removes the dead letter
once answered; other entries (ready marks) are appended to their stream again as they were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.progress import Progress
from rich.table import Table

from cli.connection import Target, connected, with_redis
from cli.output import ExitCode, Output, OutputOpt, cell, emit, emit_list, fail, fields_table, stderr
from client.transport import RpcTransport
from schemas import wire

app = typer.Typer(help="Dead letters: requests never answered ({prefix}.dead).", no_args_is_help=True)

IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (from `dead ls`).", show_default=False)]


class DeadLetter(BaseModel):
    id: str
    """Its entry id in `{prefix}.dead`."""
    dead_at: datetime
    stream: str
    """The stream it came from."""
    operation: str | None
    """The request's operation, for a request stream."""
    entry_id: str
    reason: str
    headers: dict[str, str] | None
    """The request's headers (correlation_id, reply_to, request_id, deliveries …); None if unreadable."""
    body: Any = None
    """The request's body; None if unreadable."""


class Replayed(BaseModel):
    id: str
    stream: str
    status: int | None
    """The reply's status; None when not answered in time or not a request."""
    replica: str | None = None
    detail: Any = None
    removed: bool
    """Whether the dead letter was removed (answered, or appended again)."""


@app.command("ls")
@connected
def ls(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="At most this many, oldest first.")] = 100,
    output: OutputOpt = Output.table,
) -> None:
    """List dead letters, oldest first."""
    letters = with_redis(lambda redis, where: read(redis, where, count=count))
    emit_list(letters, output, letters_table, "No dead letters.")


@app.command("show")
@connected
def show(
    dead_id: Annotated[str, typer.Argument(help="The dead letter's id.", show_default=False)],
    output: OutputOpt = Output.table,
) -> None:
    """Show one dead letter: where it came from, why, its headers and body."""
    letters = with_redis(lambda redis, where: read(redis, where, ids=[dead_id]))
    if not letters:
        fail(f'Dead letter "{dead_id}" not found.')
    emit(letters[0], output, lambda: fields_table(letters[0], f"Dead letter {dead_id}"))


@app.command("replay")
@connected
def replay(
    ids: IdsArg = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Send dead letters again and wait for their replies; answered ones are removed.

    Exits 1 if any was not answered in time (it stays a dead letter).
    """
    if not ids and not replay_all:
        raise typer.BadParameter("give dead-letter ids, or --all")

    async def run(redis: Redis, where: Target) -> list[Replayed]:
        letters = await read(redis, where, ids=None if replay_all else ids)
        missing = set(ids or ()) - {letter.id for letter in letters}
        if missing:
            fail(f"Dead letter(s) not found: {', '.join(sorted(missing))}.")
        return await send_again(redis, where, letters)

    results = with_redis(run)
    emit_list(results, output, replayed_table, "No dead letters.")
    if any(not result.removed for result in results):
        raise typer.Exit(int(ExitCode.REFUSED))


async def read(
    redis: Redis, where: Target, *, ids: Sequence[str] | None = None, count: int | None = None
) -> list[DeadLetter]:
    stream = where.channels.dead
    if ids is None:
        entries = await redis.xrange(stream, min="-", max="+", count=count)
    else:
        entries = []
        for dead_id in ids:
            try:
                entries += await redis.xrange(stream, min=dead_id, max=dead_id)
            except ResponseError:  # not a stream id: not found
                continue
    return [letter(where, entry_id, fields) for entry_id, fields in entries]


def letter(where: Target, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {key.decode(): value.decode(errors="replace") for key, value in fields.items()}
    dead_id = entry_id.decode()
    stream = text.get("stream", "")
    rpc = where.channels.rpc("")
    headers: dict[str, str] | None = None
    body: Any = None
    try:
        body, headers = wire.decode(fields.get(wire.DATA_FIELD.encode(), b""))
    except (ValueError, TypeError, AttributeError):
        body, headers = None, None
    return DeadLetter(
        id=dead_id,
        dead_at=datetime.fromtimestamp(int(dead_id.split("-")[0]) / 1000, UTC),
        stream=stream,
        operation=stream.removeprefix(rpc) if stream.startswith(rpc) else None,
        entry_id=text.get("entry_id", ""),
        reason=text.get("reason", ""),
        headers=headers,
        body=body,
    )


async def send_again(redis: Redis, where: Target, letters: list[DeadLetter]) -> list[Replayed]:
    results: list[Replayed] = []
    transport = RpcTransport(where.redis_url, where.prefix, timeout=where.timeout, owner="dead replay")
    await transport.connect()
    console = stderr()
    try:
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("Replaying dead letters", total=len(letters))
            for dead in letters:
                results.append(await send_one(redis, transport, dead))
                progress.advance(task)
    finally:
        await transport.close()
    return results


async def send_one(redis: Redis, transport: RpcTransport, dead: DeadLetter) -> Replayed:
    if dead.headers is None:
        return Replayed(id=dead.id, stream=dead.stream, status=None, detail="unreadable: not replayed", removed=False)
    if dead.operation is None:  # not a request (a ready mark): append it again as it was
        raw = wire.encode(dead.body, dead.headers)
        await redis.xadd(dead.stream, {wire.DATA_FIELD: raw})
        await redis.xdel(transport.channels.dead, dead.id)
        return Replayed(id=dead.id, stream=dead.stream, status=None, detail="appended again", removed=True)
    # The request id it first ran under (a client's header, else the stream entry it arrived as).
    request_id = dead.headers.get("request_id") or f"{dead.stream}/{dead.entry_id}"
    try:
        status, body, headers = await transport.exchange(dead.operation, dead.body, request_id=request_id)
    except Exception as exc:  # no reply in time, or Redis went away: it stays dead
        return Replayed(
            id=dead.id, stream=dead.stream, status=None, detail=getattr(exc, "detail", str(exc)), removed=False
        )
    await redis.xdel(transport.channels.dead, dead.id)
    detail = body.get("detail") if isinstance(body, dict) and status >= 400 else None
    return Replayed(
        id=dead.id, stream=dead.stream, status=status, replica=headers.get("replica"), detail=detail, removed=True
    )


def letters_table(letters: Sequence[DeadLetter]) -> Table:
    table = Table("Id", "Dead at", "Operation or stream", "Reason", "Request id", title="Dead letters")
    for dead in letters:
        table.add_row(
            cell(dead.id),
            cell(dead.dead_at),
            cell(dead.operation or dead.stream),
            cell(dead.reason),
            cell((dead.headers or {}).get("request_id")),
        )
    return table


def replayed_table(results: Sequence[Replayed]) -> Table:
    table = Table("Id", "Stream", "Status", "Replica", "Detail", "Removed", title="Replayed")
    for result in results:
        detail = result.detail if isinstance(result.detail, str | None) else json.dumps(result.detail)
        table.add_row(
            cell(result.id),
            cell(result.stream),
            cell(result.status),
            cell(result.replica),
            cell(detail),
            cell(result.removed),
        )
    return table
