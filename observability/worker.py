"""Health probes of `workpools worker`: `/healthz` while its heartbeat and poll loops keep
turning, `/readyz` while its heartbeats are acknowledged and its polls answered."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from client.process_worker import ProcessWorker
from observability.http import HttpPort, probe_routes

log = logging.getLogger("workpools.worker")

SLACK_SECONDS = 15.0
"""A loop's turn may take a client timeout (10 s) on top of its interval."""


def worker_checks(worker: ProcessWorker) -> tuple[Any, Any]:
    """(live, ready) checks of a running worker."""

    def fresh(key: str, interval: float, now: float) -> bool | str:
        at = worker.turns.get(key)
        if at is None:
            return "not yet"
        age = now - at
        return True if age <= interval + SLACK_SECONDS else f"{age:.0f} s ago"

    async def live() -> dict[str, Any]:
        now = time.monotonic()
        if not worker.turns:
            return {"started": True}  # still connecting: alive, not ready
        return {
            "heartbeat_loop": fresh("heartbeat", worker.heartbeat_interval, now),
            "poll_loop": fresh("poll", worker.poll_interval, now),
        }

    async def ready() -> dict[str, Any]:
        now = time.monotonic()
        return {
            "heartbeat": fresh("heartbeat_ok", worker.heartbeat_interval, now),
            "poll": fresh("poll_ok", worker.poll_interval, now),
        }

    return live, ready


async def run_with_probes(worker: ProcessWorker, host: str, port: int | None) -> None:
    """Run the worker; with a port, serve its probes meanwhile (a port in use is logged, not fatal)."""
    http = None
    if port is not None:
        app = web.Application()
        probe_routes(app, *worker_checks(worker))
        http = HttpPort(app, host, port)
        try:
            url = await http.start()
            log.info("worker probes: %shealthz %sreadyz", url, url)
        except OSError as exc:
            log.error("worker probes not served on %s:%s: %s", host, port, exc.strerror or exc)
            http = None
    try:
        await worker.run()
    finally:
        if http is not None:
            await http.stop()
