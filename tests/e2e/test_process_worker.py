"""`workpools worker --pool NAME` as real processes against the in-process service: runs are
claimed once, their commands run with the job variables filled in, and SIGTERM gives back what a
worker held."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from client import WorkPoolClient
from client.process_worker import BASE_ENVIRONMENT
from replica.app import build_app
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
        [first] = await wait_until(
            lambda: client.read_workers_for_work_pool(pool), timeout=30
        )  # a process start on a loaded machine
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
        await wait_until(lambda: online(client, pool, 2), timeout=30)  # a process start on a loaded machine
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
        await wait_until((tmp_path / "ready").exists, timeout=30)
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


DUMP_ENV = "import json, os; open('env.json', 'w').write(json.dumps(dict(os.environ)))"


async def test_a_command_gets_the_job_environment_on_a_minimal_base_never_the_workers_own(client, settings, tmp_path):
    pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path)))).name
    run = await client.create_flow_run(
        {"work_pool_name": pool, "job_variables": {"command": python(DUMP_ENV), "env": {"MARKER": "job"}}}
    )
    async with workers(settings, tmp_path, pool):
        [done] = await wait_until(lambda: final(client, [run.id]), timeout=20)
    assert done.state_type == "COMPLETED"
    env = json.loads((tmp_path / "env.json").read_text())
    assert (env["MARKER"], env["PREFECT__FLOW_RUN_ID"]) == ("job", str(run.id))
    assert not [name for name in env if name.startswith("WORKPOOLS_")]  # the worker's Redis URL stays its own
    assert set(env) <= {*BASE_ENVIRONMENT, "MARKER", "PREFECT__FLOW_RUN_ID"}


WAIT_FOR_GO = (
    "import pathlib, time; pathlib.Path('ready').touch(); "
    "[time.sleep(0.05) for _ in range(600) if not pathlib.Path('go').exists()]"
)


async def _lease(db, run_id) -> tuple[str | None, int | None]:
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT lease_owner, lease_token FROM flow_run WHERE id = :id"), {"id": run_id})
        ).one()
    return row.lease_owner, row.lease_token


@pytest.mark.parametrize("mode", ["--claim", "--no-claim"])
async def test_the_worker_claims_by_default_and_polls_as_prefect_with_no_claim(client, settings, tmp_path, db, mode):
    pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path)))).name
    run = await client.create_flow_run({"work_pool_name": pool, "job_variables": {"command": python(WAIT_FOR_GO)}})
    args = [mode] if mode == "--no-claim" else []
    async with workers(settings, tmp_path, pool, *args) as (worker,):
        await wait_until((tmp_path / "ready").exists, timeout=15)
        assert (await client.read_flow_run(run.id)).state_type == "RUNNING"
        owner, token = await _lease(db, run.id)
        if mode == "--claim":
            assert owner == "w0" and token is not None  # RUNNING under its lease: its token was accepted
        else:
            assert (owner, token) == (None, None)
        (tmp_path / "go").touch()
        [done] = await wait_until(lambda: final(client, [run.id]), timeout=15)
    assert (done.state_type, done.run_count) == ("COMPLETED", 1)
    assert await _lease(db, run.id) == (None, token)  # the lease ended with the terminal state


FENCED = (
    "import pathlib, signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path('terminated').write_text(repr(time.time())), sys.exit(143))); "
    "pathlib.Path('ready').touch(); time.sleep(60)"
)


async def test_a_worker_cut_off_from_the_service_stops_its_run_before_the_lease_can_end(settings, db, redis, tmp_path):
    """Heartbeats every 1 s, leases of 4 s: once no heartbeat is acknowledged, the worker
    stops the run 2.5 s after the last acknowledged one — before the lease could end and
    another worker take the run."""
    app = build_app(settings, db=db)
    await app.start()
    async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
        pool = (await client.create_work_pool(make_pool(base_job_template=template(tmp_path)))).name
        run = await client.create_flow_run({"work_pool_name": pool, "job_variables": {"command": python(FENCED)}})
        async with workers(settings, tmp_path, pool) as (worker,):
            await wait_until((tmp_path / "ready").exists, timeout=15)
            await app.stop()  # the service is gone: heartbeats are no longer acknowledged
            stopped = time.time()
            await wait_until((tmp_path / "terminated").exists, timeout=8)
            assert float((tmp_path / "terminated").read_text()) - stopped < 4.0
            app = build_app(settings, db=db)  # back, so the worker can give the run back
            await app.start()
            back = await wait_until(lambda: _given_back(client, run.id), timeout=15)
        await app.stop()
    assert back.state_name == "Rescheduled"
    assert "its lease could not be renewed before its end" in worker.output()
    assert "COMPLETED" not in worker.output()


async def _given_back(client: WorkPoolClient, run_id):
    run = await client.read_flow_run(run_id)
    return run if run.state_type == "SCHEDULED" else None
