"""`workpools serve` subprocesses for a benchmark: start, wait until they serve, stop; and
what their logs say."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]


class ReplicaStartError(RuntimeError):
    pass


def serve_command(log_level: str = "WARNING") -> list[str]:
    """`workpools serve` from the interpreter's environment (the venv's console script)."""
    script = Path(sys.executable).parent / "workpools"
    if script.exists():
        return [str(script), "serve", "--log-level", log_level]
    return [sys.executable, "-c", "from cli.main import main; main()", "serve", "--log-level", log_level]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _count_pools(redis_url: str, prefix: str) -> None:
    from client import WorkPoolClient

    async with WorkPoolClient(redis_url=redis_url, prefix=prefix, timeout=5) as client:
        await client.count_work_pools()


@dataclass
class Replica:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class ReplicaSet:
    """N `workpools serve` subprocesses sharing one prefix and database.

        async with ReplicaSet(2, prefix=p, database_url=db, redis_url=r) as replicas:
            replicas.pids  # e.g. for py-spy

    `command` replaces `workpools serve` (e.g. bench.profiling.profiled_serve_command()).
    All are started at once (so they race through the migration, as real replicas do), then
    `wait_ready()` waits, bounded, until every replica has joined the consumer group of every
    request stream and a request is answered. `stop()` sends SIGTERM, then SIGKILL to those
    still running after `stop_timeout` seconds; it only ever signals the processes it started.
    """

    def __init__(
        self,
        count: int,
        *,
        prefix: str,
        database_url: str,
        redis_url: str,
        log_dir: str | Path | None = None,
        log_level: str = "WARNING",
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        command: Sequence[str] | None = None,
        streams: int | None = None,
        probe: Callable[[str, str], Awaitable[object]] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.count = count
        self.prefix = prefix
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="workpools-bench-"))
        self.log_level = log_level
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.command = list(command) if command else serve_command(log_level)
        self.cwd = Path(cwd) if cwd else ROOT  # e.g. an exported revision (bench.revision)
        self.streams = streams  # request streams each replica reads (default: every operation's)
        self.probe = probe  # probe(redis_url, prefix): one request answered (default: count pools)
        self.replicas: list[Replica] = []
        self.ready_seconds: float | None = None

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.replicas]

    @property
    def log_paths(self) -> list[Path]:
        return [r.log_path for r in self.replicas]

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            name = f"{self.prefix}-r{i}"
            env = {
                **os.environ,
                "WORKPOOLS_REDIS_URL": self.redis_url,
                "WORKPOOLS_DATABASE_URL": self.database_url,
                "WORKPOOLS_PREFIX": self.prefix,
                "WORKPOOLS_CONSUMER_NAME": name,
                "PYTHONUNBUFFERED": "1",
                **self.env,
            }
            log_path = self.log_dir / f"{name}.log"
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    self.command,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C reaches us only; stop() shuts them down
                )
            self.replicas.append(Replica(name, process, log_path))

    def _check_alive(self) -> None:
        for r in self.replicas:
            code = r.process.poll()
            if code is not None:
                raise ReplicaStartError(
                    f"replica {r.name} (pid {r.pid}) exited with {code}; log {r.log_path}:\n{_tail(r.log_path)}"
                )

    async def wait_ready(self) -> float:
        """Wait until every replica serves; returns the seconds it took.

        Ready means: each replica has a connection blocked in XREADGROUP for every request
        stream (FastStream gives each subscriber its own connection, named after the replica),
        and then a request is answered. (XINFO CONSUMERS is no use: Redis 7.0 lists a consumer
        only once it has been delivered something.)"""
        from schemas.channels import Channels

        started = time.monotonic()
        deadline = started + self.startup_timeout
        needed = self.streams if self.streams is not None else len(Channels(self.prefix).all_rpc_streams())
        redis = Redis.from_url(self.redis_url)
        try:
            while True:
                self._check_alive()
                reading = await self._reading(redis)
                if all(reading[f"workpools-{r.name}"] >= needed for r in self.replicas):
                    break
                if not reading and time.monotonic() - started > 15:
                    # No connection carries the replicas' names: the app names its connections
                    # differently now. Fall back to the round trip below (it proves one replica).
                    print(
                        "ReplicaSet: cannot see the replicas' Redis connections by name; waiting for a reply only",
                        file=sys.stderr,
                    )
                    break
                if time.monotonic() > deadline:
                    raise ReplicaStartError(self._timeout_message("subscribe to the request streams"))
                await asyncio.sleep(0.1)
        finally:
            await redis.aclose()
        # A round trip: the request path (Redis -> replica -> PostgreSQL -> reply) works.
        while True:
            self._check_alive()
            try:
                await (self.probe or _count_pools)(self.redis_url, self.prefix)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise ReplicaStartError(self._timeout_message(f"answer ({exc!r})")) from exc
                await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def _reading(self, redis: Redis) -> Counter:
        """Connections in XREADGROUP, by client name, of our replicas (named workpools-<consumer>)."""
        names = {f"workpools-{r.name}" for r in self.replicas}
        return Counter(
            c.get("name")
            for c in await redis.client_list()
            if c.get("name") in names and str(c.get("cmd", "")).startswith("xreadgroup")
        )

    def _timeout_message(self, what: str) -> str:
        logs = "\n".join(f"--- {r.log_path}\n{_tail(r.log_path, 10)}" for r in self.replicas)
        return f"replicas did not {what} within {self.startup_timeout:.0f} s\n{logs}"

    def stop(self) -> None:
        for r in self.replicas:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for r in self.replicas:
            try:
                r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait(timeout=5)

    async def __aenter__(self) -> ReplicaSet:
        self.start()
        try:
            self.ready_seconds = await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Blocking wait, but the benchmark has nothing else to do while replicas shut down.
        await asyncio.to_thread(self.stop)


def log_warnings(paths: Sequence[Path], *needles: str) -> Counter:
    """How often each of `needles` occurs in the replicas' logs (e.g. lost channels)."""
    found: Counter = Counter()
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for needle in needles:
            found[needle] += text.count(needle)
    return found
