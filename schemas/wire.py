"""The wire envelope: how a request or reply is laid out in Redis, for clients in any language.

A request is one stream entry (`XADD {prefix}.rpc.{op} * __data__ <envelope>`); a reply is one
pub/sub message on the requester's `reply_to` channel. The envelope is FastStream's JSON format:

    {"data": "<the body, itself JSON text>", "headers": {"correlation_id": "...", ...}}

Request headers: `correlation_id` (echoed in the reply), `reply_to` (a pub/sub channel),
optionally `deadline` (unix seconds; a request seen after it is dropped unanswered) and
`request_id` (a write sent again with the same id acts once and gets the first reply).
Reply headers: `correlation_id`, `status` (HTTP-like: 200, 201, 204, 4xx, 500, 503).
A reply body is the result, or `{"detail": ...}` for an error, or empty for 204.
"""

from __future__ import annotations

import json
from typing import Any

DATA_FIELD = "__data__"


def encode(body: Any, headers: dict[str, str]) -> bytes:
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return encode_raw(data, headers)


def encode_raw(data: bytes, headers: dict[str, str]) -> bytes:
    """The envelope around an already serialised body."""
    return json.dumps({"data": data.decode(), "headers": headers}, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> tuple[Any, dict[str, str]]:
    """Return (body, headers); an empty body decodes to None."""
    envelope = json.loads(raw)
    data = envelope.get("data") or ""
    return (json.loads(data) if data else None), envelope.get("headers") or {}
