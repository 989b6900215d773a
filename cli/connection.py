"""Where commands connect (`--redis-url`, `--prefix`, `--timeout`) and how their failures end.

Every command that talks to the service takes the three options (also accepted before the
command: `workpools --prefix p work-pool ls`); each falls back to `WORKPOOLS_REDIS_URL` and
`WORKPOOLS_PREFIX`, like the service. A request gets one attempt of `--timeout` seconds; every
failure is one line on stderr and an exit code (`cli.output.ExitCode`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError

from cli.output import ExitCode, describe, fail
from client import ServiceUnavailable, WorkPoolClient, WorkPoolsError
from client.config import prefix_or_default, redis_address, redis_url_or_default
from client.errors import RedisUnreachable
from client.transport import REFUSALS, UNREACHABLE, connect_redis
from schemas.channels import Channels, Op
from schemas.common import DEFAULT_LIMIT

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0
_given: ContextVar[dict[str, Any] | None] = ContextVar("workpools_target", default=None)
"""The connection options of the running command line (before the command, then on it)."""

RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis to use (default: $WORKPOOLS_REDIS_URL, else redis://localhost:6379/0).",
        show_default=False,
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix", help="Key prefix of the service (default: $WORKPOOLS_PREFIX, else workpools).", show_default=False
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout", min=0.1, help=f"Seconds to wait for an answer (default: {DEFAULT_TIMEOUT:g}).", show_default=False
    ),
]


@dataclass(frozen=True)
class Target:
    redis_url: str
    prefix: str
    timeout: float

    @property
    def channels(self) -> Channels:
        return Channels(self.prefix)

    @property
    def address(self) -> str:
        return redis_address(self.redis_url)


def remember(redis_url: str | None, prefix: str | None, timeout: float | None) -> None:
    """Keep the options given before the command (`workpools --prefix p …`) for it."""
    _given.set({"redis_url": redis_url, "prefix": prefix, "timeout": timeout})


def connected(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command `--redis-url`, `--prefix` and `--timeout`; `target()` reads them."""
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in (("redis_url", RedisUrlOpt), ("prefix", PrefixOpt), ("timeout", TimeoutOpt))
    ]

    @functools.wraps(command)
    def with_target(*args: Any, redis_url: str | None, prefix: str | None, timeout: float | None, **kwargs: Any) -> T:
        given = _given.get() or {}
        _given.set(
            {
                "redis_url": redis_url or given.get("redis_url"),
                "prefix": prefix or given.get("prefix"),
                "timeout": timeout or given.get("timeout"),
            }
        )
        return command(*args, **kwargs)

    with_target.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    with_target.__annotations__ = {**{p.name: p.annotation for p in signature.parameters.values()}}
    with_target.__annotations__.update({p.name: p.annotation for p in extra})
    return with_target


def target() -> Target:
    given = _given.get() or {}
    return Target(
        redis_url_or_default(given.get("redis_url")),
        prefix_or_default(given.get("prefix")),
        given.get("timeout") or DEFAULT_TIMEOUT,
    )


def call(request: Callable[[WorkPoolClient], Awaitable[T]]) -> T:
    """Run `request` with a client of the target; on failure print why (one line) and exit."""
    where = target()

    async def run() -> T:
        await check_served(where)
        async with WorkPoolClient(where.redis_url, where.prefix, timeout=where.timeout, retries=0) as client:
            return await request(client)

    return run_or_exit(run())


def with_redis(work: Callable[[Redis, Target], Awaitable[T]], *, until_interrupted: bool = False) -> T:
    """Run `work` with a plain Redis connection to the target (streams the client does not wrap).
    `until_interrupted`: Ctrl-C is how it normally ends (exit 0)."""
    where = target()

    async def run() -> T:
        redis = connect_redis(where.redis_url, 4, where.timeout)
        try:
            await redis.ping()
            return await work(redis, where)
        finally:
            await redis.aclose()
            await redis.connection_pool.disconnect()

    return run_or_exit(run(), until_interrupted=until_interrupted)


def run_or_exit(work: Awaitable[T], *, until_interrupted: bool = False) -> T:
    where = target()
    try:
        return asyncio.run(work)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        if until_interrupted:
            raise typer.Exit(int(ExitCode.OK)) from None
        fail("Interrupted.", ExitCode.INTERRUPTED)
    except RedisUnreachable as exc:
        fail(str(exc.detail), ExitCode.UNREACHABLE)
    except REFUSALS as exc:
        fail(f"Redis at {where.address} refused this client: {exc}", ExitCode.UNREACHABLE)
    except WorkPoolsError as exc:
        exit_for(exc)
    except UNREACHABLE as exc:
        fail(f"Redis at {where.address} is not reachable: {exc}", ExitCode.UNREACHABLE)


def exit_for(exc: WorkPoolsError) -> NoReturn:
    if isinstance(exc, ServiceUnavailable) and exc.status == 504:
        fail(describe(exc.detail), ExitCode.UNREACHABLE)
    if exc.status == 503:
        fail(f"The service is unavailable (503: {describe(exc.detail)}); is its PostgreSQL up?", ExitCode.SERVICE_ERROR)
    if exc.status >= 500:
        fail(f"The service failed ({exc.status}): {describe(exc.detail)}", ExitCode.SERVICE_ERROR)
    fail(describe(exc.detail), ExitCode.REFUSED)


async def check_served(where: Target) -> None:
    """Fail at once when no replica has ever served this prefix on this Redis (its request
    streams have no consumer group), instead of waiting out the timeout. Skipped when Redis
    does not allow the check (a client user without XINFO)."""
    redis = connect_redis(where.redis_url, 1, where.timeout)
    try:
        groups = await redis.xinfo_groups(where.channels.rpc(Op.READ_WORK_POOLS))
    except AuthenticationError:
        raise
    except ResponseError as exc:  # NOPERM included: a client user may not have XINFO
        if "no such key" not in str(exc).lower():
            return  # e.g. NOPERM: let the request tell
        groups = []
    except UNREACHABLE as exc:
        raise RedisUnreachable(503, f"Redis at {where.address} is not reachable: {str(exc).rstrip('.')}.") from None
    finally:
        await redis.aclose()
        await redis.connection_pool.disconnect()
    if not any(_name(group) == where.channels.rpc_group for group in groups):
        raise ServiceUnavailable(
            504,
            f'No replica serves prefix "{where.prefix}" at {where.address} (no consumer group on its request '
            f"streams): start `workpools serve` with WORKPOOLS_PREFIX={where.prefix}, or check --prefix and --redis-url.",
        )


def _name(group: dict[Any, Any]) -> str:
    name = group.get("name", group.get(b"name", b""))
    return name.decode() if isinstance(name, bytes) else str(name)


async def read_all(read_page: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    """Every item of a paged list (pages of `DEFAULT_LIMIT`, the service's maximum)."""
    items: list[T] = []
    while True:
        page = await read_page(len(items))
        items += page
        if len(page) < DEFAULT_LIMIT:
            return items
