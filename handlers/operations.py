"""The stream subscribers, derived from the operation table: one per operation, each serving
its operation's handler — a write once per request id (`handlers.idempotency`).

Every operation has exactly one handler, whose body type is the table's request model; a
missing, doubled or mistyped handler fails at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any, get_type_hints

from faststream import AckPolicy
from faststream.redis import RedisResponse, RedisRouter

from handlers import deployments, flow_runs, work_pools, work_queues, workers
from handlers.idempotency import answer_once, request_id
from handlers.rpc import Deps, Handler, InOneHandler, request_message
from schemas.channels import Channels, Op
from schemas.operations import OPERATIONS, Operation
from schemas.settings import Settings
from transport.dispatch import task_per_request
from transport.envelope import JSONEnvelope, respond, respond_json
from transport.streams import request_stream

MODULES: tuple[ModuleType, ...] = (work_pools, work_queues, workers, deployments, flow_runs)


def _marked(modules: tuple[ModuleType, ...], mark: str, what: str) -> Iterator[tuple[Op, Any]]:
    """The functions of `modules` marked with an `Op` under `mark` (defined there, not imported);
    an operation marked twice fails."""
    seen: dict[Op, Any] = {}
    for module in modules:
        for function in vars(module).values():
            op = getattr(function, mark, None)
            if not isinstance(op, Op) or getattr(function, "__module__", None) != module.__name__:
                continue
            if op in seen:
                raise LookupError(f"{op} has two {what}: {seen[op].__qualname__} and {function.__qualname__}")
            seen[op] = function
            yield op, function


def collect(modules: tuple[ModuleType, ...]) -> dict[Op, Handler]:
    """Each operation's handler (functions marked `@handles(op)`), checked against the table."""
    found: dict[Op, Handler] = {}
    for op, handler in _marked(modules, "op", "handlers"):
        body = get_type_hints(handler).get("body")
        if body is not OPERATIONS[op].request:
            raise TypeError(f"the handler of {op} takes {body}, the table says {OPERATIONS[op].request}")
        found[op] = handler
    if missing := set(Op) - set(found):
        raise LookupError(f"operations without a handler: {sorted(missing)}")
    return found


HANDLERS: dict[Op, Handler] = collect(MODULES)


def collect_in_one(modules: tuple[ModuleType, ...]) -> dict[Op, InOneHandler]:
    """The writes that have a one-statement form (functions marked `@in_one_statement(op)`)."""
    found: dict[Op, InOneHandler] = {}
    for op, handler in _marked(modules, "in_one_op", "one-statement forms"):
        if not OPERATIONS[op].writes:
            raise TypeError(f"{op} does not write: it has no one-statement form")
        found[op] = handler
    return found


IN_ONE: dict[Op, InOneHandler] = collect_in_one(MODULES)


def subscriber(operation: Operation, handler: Handler, deps: Deps) -> Any:
    """`(body: <the request model>) -> reply`, as FastStream calls it (the message itself, for
    its request id, from `request_message`)."""

    in_one = IN_ONE.get(operation.op)

    async def serve(body: Any) -> RedisResponse:
        if operation.is_write(body):
            message = request_message.get()
            return await answer_once(
                deps.db,
                request_id(message),
                operation,
                lambda: handler(deps, body),
                None if in_one is None else lambda logged: in_one(deps, body, logged),
            )
        result = await handler(deps, body)
        if operation.reply is None:
            return respond(operation.status)
        return respond_json(operation.status, operation.dump_reply(result))

    serve.__name__ = serve.__qualname__ = operation.op.value
    serve.__annotations__ = {"body": operation.request, "return": RedisResponse}
    return serve


def register(router: RedisRouter, channels: Channels, settings: Settings, deps: Deps) -> None:
    """One subscriber per operation, on its stream, in the request consumer group."""
    for op, operation in OPERATIONS.items():
        reader = router.subscriber(
            stream=request_stream(channels, op, settings),
            max_workers=settings.rpc_concurrency,
            message_format=JSONEnvelope,
            # the request gate publishes the reply and acknowledges (`replica.request_gate`)
            no_reply=True,
            ack_policy=AckPolicy.MANUAL,
            title=channels.rpc(op),
            description=operation.description,
        )
        task_per_request(reader)(subscriber(operation, HANDLERS[op], deps))
