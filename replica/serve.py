"""Runs one replica until SIGTERM/SIGINT, and rebuilds it when Redis lost its consumer groups.

Redis keeps no data here: after a restart the streams and their groups are gone, and
FastStream stops a subscriber whose group vanished (asking its app to exit). This loop catches
that, builds the replica again (which recreates the groups) and serves on, within seconds.
SIGTERM stops reading, lets in-flight handlers finish within the grace period, and leaves
what could not finish pending for another replica. A replica that Redis refuses — wrong
credentials, or an ACL user without a command, key or channel it needs (NOPERM) — does not retry:
it says what was refused and stops (`Refused`), since waiting cannot fix its configuration.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError

from observability.replica import Observability
from replica.app import build_app
from schemas.settings import Settings

log = logging.getLogger("workpools")

REFUSALS = (AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError)


class Refused(Exception):
    """Redis refused this replica's user: authentication failed, or a right is missing (NOPERM)."""


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a replica's main coroutine on uvloop (libuv's event loop: less CPU per request
    than asyncio's own in the replica's profile), or asyncio's where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve_forever(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    observability = Observability(settings)  # metrics and the HTTP port outlive each rebuild
    await observability.start_http()
    try:
        await _serve(settings, stop, observability)
    finally:
        await observability.stop_http()
    log.info("replica %s stopped", settings.consumer_name)


async def _serve(settings: Settings, stop: asyncio.Event, observability: Observability) -> None:
    while not stop.is_set():
        app = build_app(settings, observability=observability)
        lost = asyncio.Event()
        app.exit = lost.set  # FastStream calls it when a subscriber's consumer group vanished
        try:
            await app.start()
        except REFUSALS as exc:
            await _stop_quietly(app)
            kind = "NOPERM" if isinstance(exc, NoPermissionError) else "authentication failed"
            raise Refused(
                f"Redis refused this replica ({kind}: {exc}); check the user and password in "
                "WORKPOOLS_REDIS_URL and the user's ACL rules (README, Security)"
            ) from None
        except Exception:
            log.warning("could not start; retrying in 2 s", exc_info=True)
            await _stop_quietly(app)
            await _wait(stop, 2.0)
            continue
        log.info("replica %s serving (prefix %r)", settings.consumer_name, settings.prefix)
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not stop.is_set():
            log.warning("a consumer group vanished (Redis restarted or flushed?); restarting the replica")
        await _stop_quietly(app)


async def _stop_quietly(app) -> None:
    try:
        await app.stop()
    except Exception:
        log.debug("error while stopping", exc_info=True)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
