"""The status page in a real headless browser (Playwright driving Debian's `chromium`), against
a running `workpools serve`: it shows the pool a test created, its late runs as they become
late, a worker ONLINE once it heartbeats, and the browser console stays free of errors.

With `WORKPOOLS_UPDATE_SCREENSHOT=1` the final page is saved as `docs/status-page.png`.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from client import WorkerClient, WorkPoolClient
from tests.factories import wait_until
from tests.faults.servers import free_port
from tests.replicas import replicas

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


async def _ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_the_status_page_shows_pools_late_runs_and_workers_live(settings, db, tmp_path):
    from playwright.async_api import async_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    page_env = {
        "WORKPOOLS_HTTP_ENABLED": "true",
        "WORKPOOLS_HTTP_PORT": str(port),
        "WORKPOOLS_STATUS_SECONDS": "0.5",
        "WORKPOOLS_LATE_AFTER_SECONDS": "3",
    }
    with replicas(settings, "page-replica", log_level="INFO", **page_env) as [replica]:
        await wait_until(lambda: _ready(url), timeout=30, interval=0.2)
        assert f"status page: {url}" in replica.output()  # printed at start
        async with (
            WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client,
            async_playwright() as playwright,
        ):
            await client.create_work_pool({"name": "etl", "type": "process", "concurrency_limit": 4})
            await client.create_work_queue("etl", {"name": "urgent", "priority": 1})
            deployment = await client.create_deployment({"name": "nightly", "work_pool_name": "etl"})
            in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            later = [
                await client.create_flow_run({"deployment_id": deployment.id, "next_scheduled_start_time": in_an_hour})
                for _ in range(2)
            ]

            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(url)

            pool_row = page.locator('#pools tr[data-pool="etl"]')
            await pool_row.wait_for(timeout=15_000)
            assert await pool_row.locator('[data-field="limit"]').inner_text() == "4"
            assert await pool_row.locator('[data-field="status"]').inner_text() == "NOT_READY"
            late = page.locator('#queues tr[data-pool="etl"][data-queue="default"] [data-field="late"]')
            assert await late.inner_text() == "0"  # due in an hour

            # Both runs rescheduled to a minute ago: late (after 3 s) on the next snapshot.
            a_minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            for run in later:
                moved = await client.set_flow_run_state(
                    run.id, {"type": "SCHEDULED", "state_details": {"scheduled_time": a_minute_ago}}
                )
                assert moved.status == "ACCEPT"
            await wait_until(lambda: _text_is(late, "2"), timeout=20, interval=0.2)

            async with WorkerClient(
                settings.redis_url, settings.prefix, work_pool_name="etl", worker_name="worker-a"
            ) as worker:
                await worker.heartbeat(ack=True)
                status = page.locator('#workers tr[data-pool="etl"][data-worker="worker-a"] [data-field="status"]')

                async def online() -> bool:
                    return await status.count() == 1 and await status.inner_text() == "ONLINE"

                await wait_until(online, timeout=15, interval=0.2)
                await wait_until(
                    lambda: _text_is(pool_row.locator('[data-field="status"]'), "READY"), timeout=15, interval=0.2
                )
                # Dispatch: the worker takes both runs and starts one; the chart plots it.
                runs = await worker.get_scheduled_flow_runs(limit=5, claim=True)
                assert len(runs) == 2
                await client.set_flow_run_state(
                    runs[0].flow_run.id, {"type": "PENDING"}, lease_token=runs[0].lease.token
                )
                await client.set_flow_run_state(
                    runs[0].flow_run.id, {"type": "RUNNING"}, lease_token=runs[0].lease.token
                )
                await page.locator("#chart svg circle").first.wait_for(timeout=20_000)
                await wait_until(lambda: _text_is(late, "0"), timeout=15, interval=0.2)
                await page.locator("#events tbody tr").first.wait_for(timeout=10_000)

                shot = tmp_path / "status-page.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                if os.environ.get("WORKPOOLS_UPDATE_SCREENSHOT"):
                    shutil.copy(shot, SCREENSHOT)
            await browser.close()
    assert problems == []


async def _text_is(locator, expected: str) -> bool:
    return await locator.count() == 1 and await locator.inner_text() == expected
