"""Throwaway servers for the fault suite, each on a spare loopback port in a temporary directory:
a `redis-server` without persistence and a PostgreSQL cluster (initdb, trust auth, 127.0.0.1
only). Both stop and start again on the same port; with a certificate, both speak TLS only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import pytest
import redis as sync_redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Wait (bounded) until `predicate()` is truthy: for synchronous fixtures."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


class Certificate(NamedTuple):
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""

    cert: Path
    key: Path


class RedisServer:
    """A `redis-server` on 127.0.0.1:`port` without persistence; `stop()` loses its data. With
    `tls`, it speaks TLS only."""

    def __init__(self, root: Path, port: int, tls: Certificate | None = None) -> None:
        self.root, self.port, self.tls = root, port, tls
        self.process: subprocess.Popen | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@" if password is not None else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.cert}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> sync_redis.Redis:
        """An administrator's client (the default user)."""
        return sync_redis.Redis.from_url(self.url(), socket_timeout=2)

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.cert),
                "--tls-auth-clients",
                "no",
            ]
        self.process = subprocess.Popen(
            [
                "redis-server",
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        poll(self._answers, 10, f"redis-server on port {self.port}")

    def stop(self, *, kill: bool = False) -> None:
        """SHUTDOWN NOSAVE (or SIGKILL): every stream, group and key is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            with self.client() as admin:
                try:
                    admin.shutdown(nosave=True)
                except sync_redis.ConnectionError:
                    pass  # the server closes the connection as it exits
        self.process.wait(10)

    def _answers(self) -> bool:
        with self.client() as admin:
            try:
                return bool(admin.ping())
            except sync_redis.RedisError:
                return False


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL cluster of its own: initdb into a temporary directory, trust auth, listening
    on 127.0.0.1:`port` only. PostgreSQL refuses to run as root: as root, its tools run as the
    `postgres` OS user, which owns the directory."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_owner:
            shutil.chown(root, "postgres", "postgres")

    def url(self, database: str, password: str | None = None, query: str = "") -> str:
        auth = f"postgres:{quote(password, safe='')}" if password else "postgres"
        return f"postgresql+asyncpg://{auth}@127.0.0.1:{self.port}/{database}{query}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_owner, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def init(self, tls: Certificate | None = None) -> None:
        """A new cluster; with `tls`, it accepts TLS connections only (`hostssl` in pg_hba.conf)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 100\n"
            )
            if tls:
                cert, key = shutil.copy(tls.cert, self.data), shutil.copy(tls.key, self.data)
                os.chmod(key, 0o600)
                if self._as_owner:
                    shutil.chown(cert, "postgres", "postgres")
                    shutil.chown(key, "postgres", "postgres")
                conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
        if tls:
            (self.data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` terminates every session; `immediate` is a crash (recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (
            subprocess.run(
                [*self._as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            == 0
        )


@contextmanager
def redis_server(tls: Certificate | None = None) -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="workpools-redis-"))
    server = RedisServer(root, free_port(), tls)
    try:
        server.start()
        yield server
    finally:
        server.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server(tls: Certificate | None = None) -> Iterator[PostgresServer]:
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="workpools-pg-"))
    server = PostgresServer(bindir, root, free_port())
    try:
        server.init(tls)
        server.start()
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
