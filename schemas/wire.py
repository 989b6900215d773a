"""The wire envelope: how a request or reply is laid out in Redis, for clients in any language.

A request is one stream entry (`XADD {prefix}.rpc.{op} * __data__ <envelope>`); a reply is one
pub/sub message on the requester's `reply_to` channel. The envelope is FastStream's JSON format:

    {"data": "<the body, itself JSON text>", "headers": {"correlation_id": "...", ...}}

Request headers: `correlation_id` (echoed in the reply), `reply_to` (a pub/sub channel),
optionally `deadline` (unix seconds; a request seen after it is dropped unanswered) and
`request_id` (a write sent again with the same id acts once and gets the first reply; a request
sent without one is known by the stream entry it first arrived as, `entry_request_id`).
Reply headers: `correlation_id`, `status` (HTTP-like: 200, 201, 204, 4xx, 500, 503), and for
an error `error`, its kind (an `ErrorKind`: two kinds can share a status, as 409 does).
A reply body is the result, or `{"detail": ...}` for an error, or empty for 204.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

DATA_FIELD = "__data__"
ENTERED_HEADER = "entered"
ERROR_HEADER = "error"


class ErrorKind(StrEnum):
    """What kind of error a reply carries, beside its status (header `error` of a stream reply,
    field `error` of a worker-channel reply). A client that does not know it reads the status."""

    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    CONFLICT = "conflict"
    """The request contradicts the data (e.g. deleting a pool's default queue, a null for a
    required column), other than a name that is taken."""
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class JSONText(bytes):
    """A reply body already written as JSON (e.g. a poll's runs, written from their rows): sent
    as it is."""


def encode(body: Any, headers: dict[str, str]) -> bytes:
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return encode_raw(data, headers)


def encode_raw(data: bytes | str, headers: dict[str, str]) -> bytes:
    """The envelope around an already serialised body."""
    text = data.decode() if isinstance(data, bytes) else data
    return json.dumps({"data": text, "headers": headers}, separators=(",", ":")).encode()


def decode_envelope(raw: bytes | str) -> tuple[str, dict[str, str]]:
    """Return (body as JSON text, headers), the body not parsed: "" for an empty body."""
    envelope = json.loads(raw)
    return envelope.get("data") or "", envelope.get("headers") or {}


def parse_body(text: str) -> Any:
    """A body's JSON text as its value; an empty body is None."""
    return json.loads(text) if text else None


def decode(raw: bytes | str) -> tuple[Any, dict[str, str]]:
    """Return (body, headers); an empty body decodes to None."""
    text, headers = decode_envelope(raw)
    return parse_body(text), headers


def entry_request_id(stream: str, entry_id: bytes | str) -> str:
    """The request id of a request sent without one: the stream entry it first arrived as (the
    reclaimer writes it into the headers when it appends the entry again)."""
    return f"{stream}/{entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
