"""`workpools worker`'s probes: ready once its heartbeats are acknowledged and its polls
answered; not ready when a loop stops getting answers."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from client.process_worker import ProcessWorker
from observability.worker import run_with_probes
from tests.factories import make_pool, wait_until
from tests.faults.servers import free_port


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_worker_probes_follow_its_heartbeats_and_polls(client, settings):
    pool = (await client.create_work_pool(make_pool())).name
    worker = ProcessWorker(
        pool, heartbeat_interval=1, poll_interval=0.2, redis_url=settings.redis_url, prefix=settings.prefix
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    running = asyncio.create_task(run_with_probes(worker, "127.0.0.1", port))
    try:

        async def ready() -> dict | None:
            try:
                status, body = await get(f"{url}readyz")
            except aiohttp.ClientError:
                return None
            return body if status == 200 else None

        body = await wait_until(ready, timeout=15, interval=0.1)
        assert body["checks"] == {"heartbeat": True, "poll": True}
        status, body = await get(f"{url}healthz")
        assert status == 200 and body["checks"] == {"heartbeat_loop": True, "poll_loop": True}

        worker.turns["poll_ok"] = time.monotonic() - 60  # its polls went unanswered for a minute
        status, body = await get(f"{url}readyz")
        assert status == 503 and body["checks"]["heartbeat"] is True
        assert body["checks"]["poll"] is not True
        await wait_until(ready, timeout=15, interval=0.1)  # the next answered poll: ready again
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
