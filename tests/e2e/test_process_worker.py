"""`workpools worker --pool NAME` as real processes against the in-process service: runs are
claimed once, their commands run with the job variables filled in, and SIGTERM gives back what a
worker held."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from client import WorkPoolClient
from schemas.settings import Settings
from tests.factories import make_pool, unique, wait_until

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-c", "from cli.main import main; main()", "worker"]
FAST = ["--poll-interval", "0.2", "--heartbeat-interval", "1", "--prefetch-seconds", "5"]

# Appends the run's MARKER to a file named after the run, in the working directory.
APPEND_MARKER = "import os; open(os.environ['PREFECT__FLOW_RUN_ID'], 'a').write(os.environ['MARKER'] + '\\n')"


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def template(working_dir: Path) -> dict[str, Any]:
    return {
        "job_configuration": {"command": "{{ command }}", "env": "{{ env }}", "working_dir": "{{ working_dir }}"},
        "variables": {
            "properties": {
                "command": {"type": "string", "default": ""},
                "env": {"type": "object", "default": {}},
                "working_dir": {"type": "string", "default": str(working_dir)},
            }
        },
    }


class Worker:
    """One `workpools worker` process; its output (and its children's) goes to a log file."""

    def __init__(self, settings: Settings, log_dir: Path, pool: str, *args: str) -> None:
        env = {**os.environ, "WORKPOOLS_REDIS_URL": settings.redis_url, "WORKPOOLS_PREFIX": settings.prefix}
        self.log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", dir=log_dir, delete=False)
        self.process = subprocess.Popen(
            [*WORKER, "--pool", pool, *FAST, *args], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def exited(self) -> bool:
        return self.process.poll() is not None

    async def stop(self) -> int:
        """SIGTERM and wait without blocking the loop (the service runs in it); SIGKILL if stuck."""
        if not self.exited():
            self.process.terminate()
            try:
                await wait_until(self.exited, timeout=15, interval=0.05)
            except AssertionError:
                self.process.kill()
                await wait_until(self.exited, timeout=5, interval=0.05)
        self.log.close()
        return self.process.returncode


@asynccontextmanager
async def workers(
    settings: Settings, log_dir: Path, pool: str, *args: str, count: int = 1
) -> AsyncIterator[list[Worker]]:
    started = [Worker(settings, log_dir, pool, "--name", f"w{i}", *args) for i in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            await worker.stop()


async def online(client: WorkPoolClient, pool: str, count: int) -> bool:
    return len([w for w in await client.read_workers_for_work_pool(pool) if w.status == "ONLINE"]) == count


async def final(client: WorkPoolClient, ids: list[Any]) -> list[Any] | None:
    runs = [await client.read_flow_run(run_id) for run_id in ids]
    return runs if all(run.state_type in ("COMPLETED", "FAILED") for run in runs) else None


async def test_runs_get_their_filled_command_and_end_completed_or_failed(client, settings, tmp_path):
    pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path)))).name
    deployment = await client.create_deployment(
        {
            "name": "d",
            "work_pool_name": pool,
            "job_variables": {"command": python(APPEND_MARKER), "env": {"MARKER": "deployment"}},
        }
    )
    overridden = await client.create_flow_run(
        {"deployment_id": deployment.id, "job_variables": {"env": {"MARKER": "run"}}}
    )
    inherited = await client.create_flow_run({"deployment_id": deployment.id})
    failing = await client.create_flow_run(
        {"work_pool_name": pool, "job_variables": {"command": python("import sys; sys.exit(3)")}}
    )
    nothing = await client.create_flow_run({"work_pool_name": pool})
    ids = [overridden.id, inherited.id, failing.id, nothing.id]

    async with workers(settings, tmp_path, pool) as (worker,):
        runs = await wait_until(lambda: final(client, ids), timeout=20)
        assert [run.state_type for run in runs] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
        assert [run.run_count for run in runs] == [1, 1, 1, 1]
        assert (tmp_path / str(overridden.id)).read_text() == "run\n"
        assert (tmp_path / str(inherited.id)).read_text() == "deployment\n"
        assert f"flow run {failing.name} ({failing.id}): exited with code 3" in worker.output()
        assert f"flow run {nothing.name} ({nothing.id}): nothing to run" in worker.output()
    assert worker.process.returncode == 0


async def test_worker_heartbeats_on_its_interval(client, settings, tmp_path):
    pool = (await client.create_work_pool(make_pool())).name
    async with workers(settings, tmp_path, pool):
        [first] = await wait_until(lambda: client.read_workers_for_work_pool(pool), timeout=10)
        assert (first.name, first.status, first.heartbeat_interval_seconds) == ("w0", "ONLINE", 1)

        async def beaten_twice_more() -> bool:  # identical beats are not taken for duplicates
            [now] = await client.read_workers_for_work_pool(pool)
            return (now.last_heartbeat_time - first.last_heartbeat_time).total_seconds() >= 1.5

        await wait_until(beaten_twice_more, timeout=6)


async def test_two_workers_complete_every_run_once(client, settings, tmp_path):
    pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path), is_paused=True))).name
    deployment = await client.create_deployment(
        {"name": "d", "work_pool_name": pool, "job_variables": {"command": python(APPEND_MARKER)}}
    )
    runs = [
        await client.create_flow_run({"deployment_id": deployment.id, "job_variables": {"env": {"MARKER": f"run-{i}"}}})
        for i in range(10)
    ]
    async with workers(settings, tmp_path, pool, "--limit", "2", count=2) as started:
        await wait_until(lambda: online(client, pool, 2), timeout=10)
        await client.update_work_pool(pool, {"is_paused": False})  # both are polling: they race for every run
        done = await wait_until(lambda: final(client, [run.id for run in runs]), timeout=20)
        assert {(run.state_type, run.run_count) for run in done} == {("COMPLETED", 1)}
        for i, run in enumerate(runs):
            assert (tmp_path / str(run.id)).read_text() == f"run-{i}\n"
        logs = [worker.output() for worker in started]
        assert all(": started " in log for log in logs), "each worker ran some of the runs"
        assert sum(log.count(": started ") for log in logs) == 10


SLEEPER = "import pathlib, time; pathlib.Path('ready').touch(); time.sleep(30)"
STUBBORN = (
    "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path('ready').touch(); time.sleep(30)"
)


@pytest.mark.parametrize("code", [SLEEPER, STUBBORN], ids=["ends-on-sigterm", "killed-after-grace"])
async def test_sigterm_gives_the_running_run_back_and_exits_0(client, settings, tmp_path, code):
    pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path)))).name
    run = await client.create_flow_run({"work_pool_name": pool, "job_variables": {"command": python(code)}})
    async with workers(settings, tmp_path, pool, "--grace-seconds", "1") as (worker,):
        await wait_until((tmp_path / "ready").exists, timeout=10)
        assert (await client.read_flow_run(run.id)).state_type == "RUNNING"
        worker.process.terminate()
        await wait_until(worker.exited, timeout=5, interval=0.05)
        assert worker.process.returncode == 0, worker.output()
    back = await client.read_flow_run(run.id)
    assert (back.state_type, back.state_name) == ("SCHEDULED", "Rescheduled")
    assert f"flow run {run.name} ({run.id}): given back" in worker.output()


async def test_unknown_pool_fails_fast(client, settings, tmp_path):
    async with workers(settings, tmp_path, unique("missing")) as (worker,):
        await wait_until(worker.exited, timeout=10, interval=0.05)
        assert worker.process.returncode == 1
        assert "not found" in worker.output()
