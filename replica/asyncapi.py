"""What every operation answers, and the AsyncAPI document: FastStream's, completed with replies.

FastStream documents what each subscriber receives, not what it answers (the subscribers return
a `RedisResponse`). Each operation's success reply is in the operation table
(`schemas.operations`); the error reply is the same for every operation (`handlers.errors`).
`asyncapi_document` adds them
as AsyncAPI 3 reply objects: a reply goes to the pub/sub channel named by the request's
`reply_to` header, with the request's `correlation_id`, an HTTP-like `status` and the answering
`replica` in its headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter

from replica.app import build_app
from schemas.channels import Channels, Op
from schemas.operations import OPERATIONS
from schemas.settings import Settings
from schemas.wire import ERROR_HEADER, ErrorKind


class ErrorReply(BaseModel):
    """The body of every failed request's reply."""

    detail: str | list[dict[str, Any]]
    """What went wrong; for 422, pydantic's list of validation errors."""


ERROR_STATUSES = (403, 404, 409, 422, 500, 503)

CONSUMER_PLACEHOLDER = "{consumer_name}"
"""Stands for the replica's consumer name (unique per process), so the document is reproducible."""

SCHEMAS = "#/components/schemas/{model}"
ERROR = "error"

REQUEST_HEADERS = {
    "type": "object",
    "properties": {
        "correlation_id": {"type": "string", "description": "Echoed in the reply."},
        "reply_to": {"type": "string", "description": "The pub/sub channel the reply goes to."},
        "timeout": {
            "type": "string",
            "description": "Seconds from when the request entered its stream (the Redis server's clock); "
            "a request seen after it is dropped unanswered.",
        },
        "deadline": {
            "type": "string",
            "description": "Unix time in seconds by the caller's clock; a request seen after it is dropped "
            "unanswered, unless it lies before the request entered its stream (the caller's clock is behind).",
        },
        "request_id": {
            "type": "string",
            "description": "A write sent again with the same id acts once and gets the first reply.",
        },
    },
    "required": ["correlation_id", "reply_to"],
}


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3 document of a replica with these settings, replies included."""
    app = build_app(settings.model_copy(update={"consumer_name": CONSUMER_PLACEHOLDER}))
    document = app.schema.to_specification().to_jsonable()
    add_replies(document, Channels(settings.prefix))
    for part in (document["channels"], document["operations"], *document["components"].values()):
        _sort(part)
    return document


def add_replies(document: dict[str, Any], channels: Channels) -> None:
    """Give each operation its reply (success or error), on one reply channel with no fixed address."""
    payloads = _payload_schemas(document["components"].setdefault("schemas", {}))
    messages = document["components"].setdefault("messages", {})
    reply_channel = channels.replies
    channel_messages: dict[str, Any] = {}

    for op, operation in OPERATIONS.items():
        stream = channels.rpc(op)
        status, body = operation.status, operation.reply
        messages[f"{stream}:Reply"] = _message(f"{stream}:Reply", f"{status} {_describe(body)}", [status], payloads[op])
        channel_messages[op.value] = {"$ref": f"#/components/messages/{stream}:Reply"}
        request = messages[f"{stream}:SubscribeMessage"]
        request.setdefault("headers", REQUEST_HEADERS)
        document["operations"][stream]["reply"] = {
            "address": {
                "description": "The requester's pub/sub channel, named in the request.",
                "location": "$message.header#/reply_to",
            },
            "channel": {"$ref": f"#/channels/{reply_channel}"},
            "messages": [
                {"$ref": f"#/channels/{reply_channel}/messages/{op.value}"},
                {"$ref": f"#/channels/{reply_channel}/messages/{ERROR}"},
            ],
        }

    error_name = f"{reply_channel}:Error"
    messages[error_name] = _message(error_name, "A failed request", ERROR_STATUSES, payloads[ERROR])
    messages[error_name]["headers"]["properties"][ERROR_HEADER] = {
        "type": "string",
        "enum": [str(kind) for kind in ErrorKind],
        "description": "The error's kind: two kinds can share a status (409 already_exists, 409 conflict).",
    }
    channel_messages[ERROR] = {"$ref": f"#/components/messages/{error_name}"}
    document["channels"][reply_channel] = {
        "address": None,
        "title": reply_channel,
        "description": (
            "Replies, one per request, PUBLISHed to the pub/sub channel named by the request's "
            f"`reply_to` header (the Python client uses `{channels.reply('<client id>')}`)."
        ),
        "messages": channel_messages,
    }


def _message(title: str, summary: str, statuses: Iterable[int], payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": title,
        "summary": summary,
        "correlationId": {"location": "$message.header#/correlation_id"},
        "headers": {
            "type": "object",
            "properties": {
                "correlation_id": {"type": "string", "description": "The request's."},
                "status": {"type": "string", "enum": [str(s) for s in statuses], "description": "HTTP-like."},
                "replica": {"type": "string", "description": "The consumer name of the replica that answered."},
            },
            "required": ["correlation_id", "status"],
        },
        "payload": payload,
    }


def _payload_schemas(components: dict[str, Any]) -> dict[Op | str, dict[str, Any]]:
    """Each reply body's JSON schema; the models they use join `components` (one generation, so
    shared models get one name). A model FastStream already put there must have the same schema."""
    bodies: dict[Op | str, Any] = {op: operation.reply for op, operation in OPERATIONS.items()}
    bodies[ERROR] = ErrorReply
    keyed, definitions = TypeAdapter.json_schemas(
        [(key, "serialization", TypeAdapter(body)) for key, body in bodies.items()], ref_template=SCHEMAS
    )
    for name, schema in definitions.get("$defs", {}).items():
        if components.setdefault(name, schema) != schema:
            raise ValueError(f"two different JSON schemas are named {name!r}")
    for key, body in bodies.items():
        if body is None:
            keyed[key, "serialization"]["description"] = "Empty: the envelope's `data` is an empty string."
    return {key: keyed[key, "serialization"] for key in bodies}


def _describe(body: Any) -> str:
    """`WorkPool`, `list[WorkPool]`, `int`, `empty`."""
    if body is None:
        return "empty"
    if args := get_args(body):
        return f"{get_origin(body).__name__}[{', '.join(map(_describe, args))}]"
    return body.__name__


def _sort(mapping: dict[str, Any]) -> None:
    """FastStream lists subscribers in no fixed order; sort by name so the document is stable."""
    items = sorted(mapping.items())
    mapping.clear()
    mapping.update(items)
