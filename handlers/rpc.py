"""What an operation's handler is: what it may use, how it is marked, how its result is sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from schemas.channels import Op
from schemas.scheduling import ReadyMark
from services.db import Database
from services.idempotency import Logged


@dataclass(frozen=True)
class Deps:
    """What handlers use: the database, and the publisher of ready marks (after a poll)."""

    db: Database
    ready: Callable[[ReadyMark], Awaitable[Any]]


request_message: ContextVar[Any] = ContextVar("workpools_request_message")
"""The stream message being handled (FastStream's `RedisStreamMessage`), set by the request gate
(`replica.request_gate`): read here rather than through FastStream's `Context("message")`, which
fast_depends resolves in a worker thread for every request.
"""

Handler = Callable[[Deps, Any], Awaitable[Any]]
"""`(deps, request) -> result`: a typed body in, one service call, the result out."""

H = TypeVar("H", bound=Handler)
W = TypeVar("W", bound=Callable[..., Awaitable[bytes | None]])


def handles(op: Op) -> Callable[[H], H]:
    """Marks a function as the handler of `op` (`handlers.operations` collects them)."""

    def mark(handler: H) -> H:
        handler.op = op  # type: ignore[attr-defined]
        return handler

    return mark


InOneHandler = Callable[[Deps, Any, Logged], Awaitable[bytes | None]]
"""`(deps, request, logged) -> stored reply | None`: an operation's write, its request record and
its events in one statement (`services.db.Database.one_statement`) when it can be; None sends
the request to the operation's handler, in a unit of work."""


def in_one_statement(op: Op) -> Callable[[W], W]:
    """Marks a function as the one-statement form of `op`'s write (`InOneHandler`)."""

    def mark(handler: W) -> W:
        handler.in_one_op = op  # type: ignore[attr-defined]
        return handler

    return mark


def jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [jsonable(item) for item in result]
    return result
