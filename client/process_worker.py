"""`ProcessWorker`: Prefect's process worker on workpools.

It heartbeats and polls on the worker channel (`WorkerClient`). By default it claims (claim mode,
docs/claims.md): its long polls lease runs to it, every state change carries the run's lease
token, and every heartbeat names the leases it holds. A run whose lease it could not renew
before the lease's end is stopped (self-fencing: SIGTERM 1.5 heartbeat intervals before the end
it knows of, SIGKILL half an interval later) and not reported, so a worker cut off from the
service and the worker that takes its runs over never run one run at once. With `claim=False`
it polls as Prefect's worker does and claims each run by proposing PENDING (only one worker's
proposal is accepted, docs/orchestration.md#scheduled-to-pending). Either way it runs the
command the pool's base job template gives for the run as a child process, with the job's
environment on a minimal base (never the worker's own variables, such as its Redis URL), and
reports RUNNING then COMPLETED or FAILED (`WorkPoolClient`). On `stop()` (SIGTERM, SIGINT) it polls no
more, forwards SIGTERM to its children, waits `grace_seconds` (then SIGKILL), and gives every run
it claimed but did not finish back to SCHEDULED, so another worker takes it. A command that still
exits 0 after that SIGTERM counts as finished (COMPLETED); one that ends otherwise is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from client.errors import ServiceUnavailable, WorkPoolsError
from client.work_pools import WorkPoolClient
from client.workers import WorkerClient
from schemas.common import DEFAULT_LIMIT
from schemas.flow_runs import FlowRun
from schemas.job_templates import fill_template
from schemas.scheduling import WorkerFlowRun

log = logging.getLogger("workpools.worker")
T = TypeVar("T")

UNLIMITED_POLL_SIZE = 10
"""Runs asked for per poll when the worker has no limit."""
RESCHEDULED = {"type": "SCHEDULED", "name": "Rescheduled"}


def label(run: FlowRun) -> str:
    """How logs name a run."""
    return f"{run.name} ({run.id})"


@dataclass
class Job:
    """What to run for one flow run; no `command` means there is nothing to run."""

    command: list[str]
    env: dict[str, str]
    working_dir: str | None


def job_values(
    base_job_template: dict[str, Any], deployment_variables: dict[str, Any] | None, run_variables: dict[str, Any] | None
) -> dict[str, Any]:
    """The template's defaults, overridden by the deployment's job variables, then the run's."""
    properties = (base_job_template.get("variables") or {}).get("properties") or {}
    defaults = {
        name: spec["default"] for name, spec in properties.items() if isinstance(spec, dict) and "default" in spec
    }
    return {**defaults, **(deployment_variables or {}), **(run_variables or {})}


def job_for(base_job_template: dict[str, Any], values: dict[str, Any], flow_run_id: UUID) -> Job:
    """Fill the template's `job_configuration` (as Prefect's process worker reads it)."""
    configuration = fill_template(base_job_template.get("job_configuration") or {}, values) or {}
    command = configuration.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    env = {
        **base_environment(),
        **{str(k): str(v) for k, v in (configuration.get("env") or {}).items() if v is not None},
        "PREFECT__FLOW_RUN_ID": str(flow_run_id),
    }
    return Job([str(part) for part in command], env, configuration.get("working_dir") or None)


BASE_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
"""The only variables of the worker's own environment a flow-run command gets."""


def base_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in BASE_ENVIRONMENT if name in os.environ}


@dataclass
class Held:
    """A run this worker claimed, until its end is reported or it is given back."""

    run: FlowRun
    token: int | None = None
    """Claim mode: the lease's token."""
    lease_until: float = float("inf")
    """Claim mode: the latest time (time.monotonic()) the lease is known to last until."""
    fenced: bool = False
    """Its lease could not be renewed in time (or ended): the process was stopped, nothing is reported."""
    task: asyncio.Task | None = None
    process: asyncio.subprocess.Process | None = None
    interrupted: bool = False
    """The worker stopped while the run's process was running."""
    settled: bool = False
    """Its end was reported (or it left this worker's hands): nothing to give back."""


class ProcessWorker:
    """`await ProcessWorker("etl", redis_url=..., prefix=...).run()` until `stop()` or a signal."""

    def __init__(
        self,
        work_pool_name: str,
        work_queue_names: list[str] | None = None,
        *,
        limit: int | None = None,
        name: str | None = None,
        heartbeat_interval: float = 30.0,
        poll_interval: float = 10.0,
        prefetch_seconds: float = 10.0,
        grace_seconds: float = 10.0,
        redis_url: str | None = None,
        prefix: str | None = None,
        claim: bool = True,
    ) -> None:
        self.work_pool_name = work_pool_name
        self.work_queue_names = work_queue_names or None
        self.limit = limit
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat_interval, self.poll_interval = heartbeat_interval, poll_interval
        self.prefetch, self.grace_seconds = timedelta(seconds=prefetch_seconds), grace_seconds
        self.redis_url, self.prefix = redis_url, prefix
        self.claim = claim
        self.lease_seconds = min(3600.0, 4 * max(1, round(heartbeat_interval)))
        """Claim mode: asked for each claim; each heartbeat renews it (docs/claims.md)."""
        self.wait_seconds = min(60.0, poll_interval, self.lease_seconds / 4)
        """Claim mode: how long a poll waits for work (answered at once when work comes)."""
        self.fenced = 0
        """Runs stopped because their lease could not be renewed in time."""
        self._slot_freed = asyncio.Event()
        self.held: dict[UUID, Held] = {}
        self._stopping = asyncio.Event()
        self.turns: dict[str, float] = {}
        """Liveness for probes: when (time.monotonic()) each loop, "heartbeat" and "poll", last
        turned, and when a heartbeat was last acknowledged ("heartbeat_ok") and a poll last
        answered ("poll_ok")."""

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker %s stopping", self.name)
        self._stopping.set()

    async def run(self, handle_signals: bool = True) -> None:
        """Serve until stopped. Raises `ObjectNotFound` at once if the pool does not exist."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        worker = WorkerClient(
            self.redis_url,
            self.prefix,
            work_pool_name=self.work_pool_name,
            worker_name=self.name,
            heartbeat_interval_seconds=max(1, round(self.heartbeat_interval)),
            timeout=min(10.0, max(1.0, 2 * self.heartbeat_interval)),
        )
        try:
            async with worker, WorkPoolClient(self.redis_url, self.prefix, timeout=10) as client:
                self.worker, self.client = worker, client
                await self._first_heartbeat()
                self.turns["heartbeat"] = self.turns["heartbeat_ok"] = time.monotonic()
                log.info("worker %s started on pool %s", self.name, self.work_pool_name)
                heartbeats = asyncio.create_task(self._heartbeats())
                fencing = asyncio.create_task(self._fence_until_stopped()) if self.claim else None
                try:
                    await self._poll_until_stopped()
                finally:
                    # the loops end by the flag too: on Python 3.11 a cancel that lands as a
                    # redis-py call completes can be lost (asyncio.wait_for), and beats go on
                    self._stopping.set()
                    heartbeats.cancel()
                    if fencing is not None:
                        fencing.cancel()
                    await self._give_back()
            log.info("worker %s stopped", self.name)
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    # heartbeats and polls

    async def _heartbeats(self) -> None:
        """One heartbeat every interval, on time: a beat waiting for its answer (or lost) does
        not hold back the next one."""
        beating: set[asyncio.Task[None]] = set()
        try:
            while not await self._stopped_within(self.heartbeat_interval):
                if len(beating) < 3:
                    beat = asyncio.create_task(self._beat())
                    beating.add(beat)
                    beat.add_done_callback(beating.discard)
                self.turns["heartbeat"] = time.monotonic()
        finally:
            for beat in beating:
                beat.cancel()

    async def _beat(self) -> None:
        try:
            await self._heartbeat()
            self.turns["heartbeat_ok"] = time.monotonic()
        except WorkPoolsError as exc:
            log.warning("heartbeat failed: %s", exc)
        except Exception:
            log.warning("heartbeat failed", exc_info=True)

    async def _first_heartbeat(self, patience: float = 10.0) -> None:
        """Acknowledged before anything else (an unknown pool fails at once); a heartbeat lost
        on the way (no answer in time) is sent again for up to `patience` seconds."""
        started = time.monotonic()
        while True:
            try:
                await self.worker.heartbeat(ack=True, lease_tokens=[] if self.claim else None)
                return
            except ServiceUnavailable:
                if time.monotonic() - started > patience:
                    raise
                log.info("no answer to the first heartbeat yet; sending another")

    async def _heartbeat(self) -> None:
        """Acknowledged, so a lost one is noticed. In claim mode it names the leases held and
        learns how long each was renewed for; a lease it named that was not renewed has ended
        (taken back by the service): its run is stopped."""
        if not self.claim:
            await self.worker.heartbeat(ack=True)
            return
        named = {held.token: held for held in self.held.values() if held.token is not None and not held.settled}
        sent = time.monotonic()
        renewed = await self.worker.heartbeat(ack=True, lease_tokens=list(named)) or {}
        for token, held in named.items():
            if token in renewed:
                held.lease_until = max(held.lease_until, sent + renewed[token])
            elif not held.settled:
                self._fence(held, "its lease has ended")

    async def _fence_until_stopped(self) -> None:
        """Self-fencing: a run whose lease is about to end unrenewed is stopped first."""
        stop_before, kill_before = 1.5 * self.heartbeat_interval, 1.0 * self.heartbeat_interval
        while not await self._stopped_within(min(0.25, self.heartbeat_interval / 4)):
            now = time.monotonic()
            for held in list(self.held.values()):
                if held.settled or held.token is None:
                    continue
                if not held.fenced and now >= held.lease_until - stop_before:
                    self._fence(held, "its lease could not be renewed before its end")
                if held.fenced and now >= held.lease_until - kill_before:
                    if held.process is not None and held.process.returncode is None:
                        held.process.kill()

    def _fence(self, held: Held, why: str) -> None:
        if held.fenced:
            return
        held.fenced = True
        self.fenced += 1
        log.warning("flow run %s: stopping it: %s", label(held.run), why)
        if held.process is not None and held.process.returncode is None:
            held.process.terminate()

    async def _poll_until_stopped(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.claim:
                    await self._claim_runs()
                else:
                    await self._poll()
                self.turns["poll_ok"] = time.monotonic()
            except WorkPoolsError as exc:
                log.warning("poll failed: %s", exc)
                await self._stopped_within(self.poll_interval)
            except Exception:
                log.warning("poll failed", exc_info=True)
                await self._stopped_within(self.poll_interval)
            self.turns["poll"] = time.monotonic()
            if not self.claim:
                await self._stopped_within(self.poll_interval)

    def _free_slots(self) -> int:
        unfinished = sum(not held.settled for held in self.held.values())
        return UNLIMITED_POLL_SIZE if self.limit is None else min(self.limit - unfinished, DEFAULT_LIMIT)

    async def _claim_runs(self) -> None:
        """One long poll in claim mode. Its runs are leased to this worker; a claim whose
        answer did not come is sent again by `WorkerClient` with the same request id, which
        returns the same runs."""
        free = self._free_slots()
        if free <= 0:
            self._slot_freed.clear()
            await self._unless_stopped(asyncio.wait_for(self._slot_freed.wait(), self.poll_interval), quiet=True)
            return
        before = datetime.now(UTC) + self.prefetch
        sent = time.monotonic()  # the leases last at least lease_seconds from here, whichever try is answered
        claimed = self.worker.get_scheduled_flow_runs(
            self.work_queue_names,
            scheduled_before=before,
            limit=free,
            claim=True,
            lease_seconds=self.lease_seconds,
            wait_seconds=self.wait_seconds,
            request_id=uuid4().hex,
        )
        items: list[WorkerFlowRun] | None = await self._unless_stopped(claimed)
        if not items and time.monotonic() - sent < self.wait_seconds / 2:
            await self._stopped_within(self.poll_interval)  # answered empty at once (a replica stopping)
        for item in items or []:
            if item.lease is None or item.flow_run.id in self.held:
                continue
            held = self.held[item.flow_run.id] = Held(item.flow_run, item.lease.token, sent + self.lease_seconds)
            held.task = asyncio.create_task(self._execute(held, propose_pending=True))

    async def _poll(self) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        before = datetime.now(UTC) + self.prefetch
        polled = self.worker.get_scheduled_flow_runs(self.work_queue_names, scheduled_before=before, limit=free)
        items = await self._unless_stopped(polled)  # a poll changes nothing: safe to abandon
        for item in items or []:
            if self._stopping.is_set():
                return
            if item.flow_run.id not in self.held:
                await self._claim(item.flow_run)

    async def _claim(self, run: FlowRun) -> None:
        result = await self.client.set_flow_run_state(run.id, {"type": "PENDING"})
        if result.status != "ACCEPT":
            log.debug("flow run %s taken elsewhere (%s)", label(run), result.status)
            return
        held = self.held[run.id] = Held(run)
        held.task = asyncio.create_task(self._execute(held))

    # one run

    async def _execute(self, held: Held, propose_pending: bool = False) -> None:
        run = held.run
        try:
            if propose_pending and (held.fenced or not await self._report(held, {"type": "PENDING"})):
                return
            try:
                job = await self._job(run)
            except (WorkPoolsError, ValueError, TypeError, AttributeError) as exc:
                if not self._stopping.is_set():
                    log.error("flow run %s: no job: %s", label(run), exc)
                    await self._report(held, {"type": "FAILED", "message": f"No job to run: {exc}"}, final=True)
                return
            if self._stopping.is_set() or held.fenced or not await self._report(held, {"type": "RUNNING"}):
                return
            if held.fenced:  # its lease may end before the command could: not started
                return
            if not job.command:
                log.info("flow run %s: nothing to run", label(run))
                await self._report(held, {"type": "COMPLETED"}, final=True)
                return
            await self._run_process(held, job)
        except WorkPoolsError as exc:  # the service did not take a report: the run stays held
            log.error("flow run %s: %s", label(run), exc)
        except Exception:
            log.exception("flow run %s: unexpected error", label(run))
        finally:
            if held.fenced and not held.settled:
                await self._give_back_fenced(held)
            if held.settled:
                self.held.pop(run.id, None)
                self._slot_freed.set()

    async def _give_back_fenced(self, held: Held) -> None:
        """A fenced run: given back (SCHEDULED) if its lease still holds, so another worker need
        not wait for the lease's end; refused (stale token) if it has ended already."""
        try:
            result = await self.client.set_flow_run_state(held.run.id, RESCHEDULED, lease_token=held.token)
            log.info("flow run %s: given back after fencing (%s)", label(held.run), result.status)
        except WorkPoolsError as exc:
            log.warning("flow run %s: could not give it back after fencing: %s", label(held.run), exc)
        held.settled = True

    async def _job(self, run: FlowRun) -> Job:
        pool = await self.client.read_work_pool(self.work_pool_name)
        deployment_variables = None
        if run.deployment_id is not None:
            deployment_variables = (await self.client.read_deployment(run.deployment_id)).job_variables
        values = job_values(pool.base_job_template, deployment_variables, run.job_variables)
        return job_for(pool.base_job_template, values, run.id)

    async def _run_process(self, held: Held, job: Job) -> None:
        run = held.run
        try:
            held.process = await asyncio.create_subprocess_exec(*job.command, env=job.env, cwd=job.working_dir)
        except OSError as exc:
            log.error("flow run %s: could not start %s: %s", label(run), job.command[0], exc)
            await self._report(held, {"type": "FAILED", "message": f"Could not start the command: {exc}"}, final=True)
            return
        log.info("flow run %s: started %s (pid %d)", label(run), shlex.join(job.command), held.process.pid)
        if self._stopping.is_set():  # stopped while it was starting
            held.interrupted = True
            held.process.terminate()
        code = await held.process.wait()
        log.info("flow run %s: exited with code %d", label(run), code)
        if held.fenced and code != 0:
            return  # stopped by the fence: no longer this worker's to report
        if held.interrupted and code != 0:
            return  # given back by _give_back
        if code == 0:
            await self._report(held, {"type": "COMPLETED"}, final=True)
        else:
            await self._report(held, {"type": "FAILED", "message": f"The command exited with code {code}."}, final=True)

    async def _report(self, held: Held, state: dict[str, Any], final: bool = False) -> bool:
        """Propose a state (with the lease token in claim mode); False (and the run is no longer
        this worker's) unless accepted. Accepted, it renews the lease."""
        sent = time.monotonic()
        result = await self.client.set_flow_run_state(held.run.id, state, lease_token=held.token)
        if result.status != "ACCEPT":
            if held.token is not None:
                self._fence(held, f"{state['type']} refused: {result.details.get('reason')}")
            log.warning(
                "flow run %s: %s not accepted (%s): %s",
                label(held.run),
                state["type"],
                result.status,
                result.details.get("reason"),
            )
            held.settled = True
            return False
        held.settled = final
        if held.token is not None and not final:
            held.lease_until = max(held.lease_until, sent + self.lease_seconds)
        if final:
            log.info("flow run %s: %s", label(held.run), state["type"])
        return True

    # stopping

    async def _give_back(self) -> None:
        """Interrupt the children, wait for them, and reschedule every run not finished."""
        for held in self.held.values():
            if held.process is not None and held.process.returncode is None:
                held.interrupted = True
                held.process.terminate()
        tasks = [held.task for held in self.held.values() if held.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.grace_seconds)
            for held in self.held.values():
                if held.task in late and held.process is not None and held.process.returncode is None:
                    log.warning(
                        "flow run %s: still running after %s s; killing it", label(held.run), self.grace_seconds
                    )
                    held.process.kill()
            if late:
                _, late = await asyncio.wait(late, timeout=5)
                for task in late:
                    task.cancel()
        for held in list(self.held.values()):
            if not held.settled:
                try:
                    result = await self.client.set_flow_run_state(held.run.id, RESCHEDULED, lease_token=held.token)
                    log.info("flow run %s: given back (%s)", label(held.run), result.status)
                except WorkPoolsError as exc:
                    log.error("flow run %s: could not give it back: %s", label(held.run), exc)

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _unless_stopped(self, work: Awaitable[T], quiet: bool = False) -> T | None:
        """`work`'s result, or None once the worker stops first (or, `quiet`, when it times out)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if task.done():
            if quiet and isinstance(task.exception(), TimeoutError):
                return None
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
