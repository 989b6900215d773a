"""How the `workpools` command fails: fast, in one line, with a documented exit code; and every
command's --help renders. No replica runs here."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from redis import Redis
from typer.main import get_command

from cli.main import cli
from cli.output import ExitCode
from schemas.channels import Channels, Op
from tests.cli import command_env, timed, workpools


def closed_port() -> int:
    """A local TCP port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command_paths(group=None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    group = group or get_command(cli)
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from command_paths(command, (*path, name))


def test_every_command_has_help_that_renders(settings):
    env = command_env(settings)
    paths = list(command_paths())
    for path in paths:
        result = workpools(env, *path, "--help")
        assert "Usage: workpools" in result.stdout and "Traceback" not in result.output, path
    names = {" ".join(path) for path in paths}
    assert {
        "work-pool create",
        "work-pool update",
        "work-pool set-concurrency-limit",
        "work-pool clear-concurrency-limit",
        "work-pool pause",
        "work-pool resume",
        "work-pool inspect",
        "work-pool ls",
        "work-pool delete",
        "pool ls",
        "work-queue create",
        "work-queue update",
        "work-queue set-concurrency-limit",
        "work-queue clear-concurrency-limit",
        "work-queue pause",
        "work-queue resume",
        "work-queue inspect",
        "work-queue ls",
        "work-queue delete",
        "queue ls",
        "worker ls",
        "worker delete",
        "worker heartbeat",
        "worker poll",
        "work-pool preview",
        "work-queue preview",
        "deployment ls",
        "flow-run ls",
        "deployment create",
        "deployment inspect",
        "flow-run create",
        "flow-run inspect",
        "flow-run set-state",
        "events tail",
        "dead ls",
        "dead show",
        "dead replay",
        "health",
        "db upgrade",
        "docs asyncapi",
        "serve",
    } <= names


def test_version_and_usage_errors(settings):
    env = command_env(settings)
    assert workpools(env, "--version").stdout.strip().startswith("workpools ")
    assert workpools(env, "work-pool", "ls", "--bogus", exit_code=ExitCode.USAGE).stdout == ""
    assert workpools(env, "work-pool", "ls", "-o", "xml", exit_code=ExitCode.USAGE).stdout == ""
    missing = workpools(env, "work-pool", "create", "p", "--base-job-template", "/nonexistent.json", exit_code=2)
    assert "cannot read base job template /nonexistent.json" in missing.stderr
    nothing = workpools(env, "work-pool", "update", "p", exit_code=ExitCode.USAGE)
    assert "nothing to change" in nothing.stderr
    assert "give --deployment or --pool" in workpools(env, "flow-run", "create", exit_code=2).stderr
    assert "Missing option --pool." in workpools(env, "worker", "--limit", "1", exit_code=2).stderr


@pytest.mark.parametrize(
    "args",
    [
        ("work-pool", "ls"),
        ("work-queue", "ls", "-o", "json"),
        ("events", "tail"),
        ("dead", "ls"),
        ("health", "-o", "json"),
    ],
)
def test_redis_down_is_one_line_and_exit_3_within_seconds(settings, args):
    env = command_env(settings, WORKPOOLS_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result, seconds = timed(env, *args, exit_code=ExitCode.UNREACHABLE)
    assert seconds < 3, seconds
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Redis at redis://127.0.0.1:") and "is not reachable" in line


def test_no_replica_for_the_prefix_is_one_line_and_exit_3_at_once(settings, redis):
    env = command_env(settings)  # this test's own prefix: no replica has ever served it
    result, seconds = timed(env, "work-pool", "ls", "-o", "json", exit_code=ExitCode.UNREACHABLE)
    assert seconds < 2, seconds
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f'No replica serves prefix "{settings.prefix}" at redis://127.0.0.1:6379/0 (no consumer group on its '
        f"request streams): start `workpools serve` with WORKPOOLS_PREFIX={settings.prefix}, or check --prefix and "
        "--redis-url."
    )


def test_a_replica_that_stopped_answering_fails_after_the_timeout(settings, redis):
    """Streams and groups exist (a replica served once) but nothing answers: the request waits
    its --timeout, once, and says so in one line."""
    channels = Channels(settings.prefix)
    sync_redis = Redis.from_url(settings.redis_url)
    sync_redis.xgroup_create(channels.rpc(Op.READ_WORK_POOLS), channels.rpc_group, id="0", mkstream=True)
    sync_redis.close()
    env = command_env(settings)
    result, seconds = timed(env, "--timeout", "1.5", "work-pool", "ls", exit_code=ExitCode.UNREACHABLE)
    assert 1.5 <= seconds < 3.5, seconds
    assert result.stderr.strip() == (
        f'No replica answered read_work_pools within 1.5 s on prefix "{settings.prefix}" at '
        f"redis://127.0.0.1:6379/0: is `workpools serve` running there with WORKPOOLS_PREFIX={settings.prefix}?"
    )
    health, seconds = timed(env, "health", "--timeout", "1", exit_code=ExitCode.UNREACHABLE)
    assert seconds < 3 and health.stdout == ""
    assert health.stderr.strip().startswith(f'No replica answered on prefix "{settings.prefix}"')


def test_db_upgrade_with_postgresql_down_is_one_line_and_exit_3(settings):
    port = closed_port()
    env = command_env(settings, WORKPOOLS_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/workpools")
    result, seconds = timed(env, "db", "upgrade", exit_code=ExitCode.UNREACHABLE)
    assert seconds < 3, seconds
    [line] = result.stderr.splitlines()
    assert line.startswith(f"PostgreSQL at 127.0.0.1:{port}/workpools is not reachable:"), line
    assert "Traceback" not in result.output and result.stdout == ""


def test_db_upgrade_applies_the_migrations(settings):
    result = workpools(command_env(settings), "db", "upgrade")
    assert result.stdout.strip() == "database is up to date"
