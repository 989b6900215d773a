"""`workpools events tail [-f]`: the latest events of `{prefix}.events`, then (with -f) new ones.

Reads with XRANGE/XREVRANGE only, so it works with the documented client ACL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.text import Text

from cli.connection import Target, connected, with_redis
from cli.output import Output, OutputOpt, stdout, waiting
from schemas.events import Event

app = typer.Typer(help="Events the service appends to {prefix}.events (Prefect's names).", no_args_is_help=True)

FOLLOW_EVERY = 0.5
"""Seconds between reads while following."""


@app.command("tail")
@connected
def tail(
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, help="How many of the latest events to show first.")
    ] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")] = False,
    event: Annotated[
        str | None, typer.Option("--event", "-e", help="Only events whose name starts with this.", show_default=False)
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Print the latest events, oldest first; with --follow keep printing new ones.

    `-o json` prints an array, or with --follow one JSON object per line, as `-o jsonl`.
    """

    async def read(redis: Redis, where: Target) -> None:
        stream = where.channels.events
        latest = await redis.xrevrange(stream, max="+", min="-", count=count) if count else []
        entries = list(reversed(latest))
        show([parse(fields) for _, fields in entries], event, output, streaming=follow)
        if not follow:
            return
        last = entries[-1][0].decode() if entries else await _last_id(redis, stream)
        stop = stop_on_signals()
        with waiting(f"Following {stream} (Ctrl-C to stop)…"):
            while not stop.is_set():
                new = await redis.xrange(stream, min=f"({last}", max="+", count=1000)
                if new:
                    last = new[-1][0].decode()
                    show([parse(fields) for _, fields in new], event, output, streaming=True)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), FOLLOW_EVERY)

    with_redis(read, until_interrupted=follow)


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT (Ctrl-C) or SIGTERM: following ends there, cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _last_id(redis: Redis, stream: str) -> str:
    newest = await redis.xrevrange(stream, max="+", min="-", count=1)
    return newest[0][0].decode() if newest else "0-0"


def parse(fields: dict[bytes, bytes]) -> Event:
    return Event.model_validate_json(fields[b"event"])


def show(events: list[Event], name_prefix: str | None, output: Output, *, streaming: bool) -> None:
    events = [e for e in events if name_prefix is None or e.event.startswith(name_prefix)]
    if output is Output.json and not streaming:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
    elif output is Output.table:
        console = stdout()
        for e in events:
            console.print(line(e))
    else:
        for e in events:
            typer.echo(e.model_dump_json(), nl=True)


def line(event: Event) -> Text:
    resource = event.resource.get("prefect.resource.name") or event.resource.get("prefect.resource.id", "")
    return Text(f"{event.occurred.isoformat(sep=' ', timespec='milliseconds')}  {event.event}  {resource}")
