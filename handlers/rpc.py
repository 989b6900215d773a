"""Request/reply plumbing shared by the handler modules: one stream per operation, one group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faststream.redis import RedisResponse, RedisRouter, StreamSub
from pydantic import BaseModel

from schemas.channels import Channels, Op
from schemas.settings import Settings
from transport.envelope import JSONEnvelope, respond

Subscribe = Callable[[Op, str], Callable[[Callable[..., Any]], Any]]


def rpc_subscriber(router: RedisRouter, channels: Channels, settings: Settings) -> Subscribe:
    """A decorator factory: `@subscribe(op, description)` serves `op` from its stream."""

    def subscribe(op: Op, description: str) -> Callable[[Callable[..., Any]], Any]:
        return router.subscriber(
            stream=StreamSub(
                channels.rpc(op),
                group=channels.rpc_group,
                consumer=settings.consumer_name,
                max_records=settings.rpc_concurrency,
            ),
            max_workers=settings.rpc_concurrency,
            message_format=JSONEnvelope,
            title=channels.rpc(op),
            description=description,
        )

    return subscribe


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [_jsonable(item) for item in result]
    return result


def reply(status: int, result: Any = None) -> RedisResponse:
    return respond(status, _jsonable(result))
