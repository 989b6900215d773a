"""Building blocks shared by every contract: base models, names, limits, enums, UTC datetimes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_LIMIT = 200
"""Default and maximum `limit` of every filter and poll (Prefect's `server.api.default_limit`)."""


def as_utc(value: datetime) -> datetime:
    """Read a naive datetime as UTC; convert an aware one to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
"""Integers are stored in PostgreSQL `integer` columns: a larger one is a bad request (422)."""
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
NonNegativeInt = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveInt = Annotated[int, Field(ge=1, le=INT32_MAX)]

NAME_PATTERN = r"^[^/%&><]+$"
"""Names of pools and queues may not contain `/ % & > <` (they are addressed by name)."""


def _not_blank(value: str) -> str:
    if not value.strip(" '\""):
        raise ValueError("name cannot be an empty string")
    return value


NAME_MAX_LENGTH = 500
"""The longest name a pool, queue or worker can be given. Names are unique-indexed, and an index
entry of PostgreSQL holds about 2,700 bytes: 500 characters of up to 4 bytes each fit."""

WorkerName = Annotated[str, StringConstraints(max_length=NAME_MAX_LENGTH)]
QueueName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)]
PoolName = Annotated[QueueName, AfterValidator(_not_blank)]


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as JSON data (type, loc, msg, input, ctx). An input JSON cannot carry
    (e.g. bytes that are not UTF-8) is left out rather than failing the whole report."""
    details: list[dict[str, Any]]
    try:
        details = json.loads(exc.json(include_url=False))
        return details
    except ValueError:
        pass
    try:
        details = json.loads(exc.json(include_url=False, include_input=False))
        return details
    except ValueError:
        return [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]


MAX_JSON_DEPTH = 64
"""How deep a request body or worker message may nest (objects and arrays, the body itself being
level 1), and so every JSON field in it: `parameters`, `job_variables`, `base_job_template` …
Deeper is refused (422) where the message enters, before anything else reads it."""


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Where ``value`` first nests deeper than ``limit`` levels (a path like ``parameters/a/0``), or
    None. Iterative: a value nested far deeper than Python's recursion limit is measured safely."""
    if not isinstance(value, (dict, list, tuple)):
        return None
    containers = (dict, list, tuple)
    stack: list[tuple[Any, int, Any]] = [(value, 1, None)]
    while stack:
        item, depth, trail = stack.pop()
        if depth > limit:
            parts: list[str] = []
            while trail is not None:
                trail, key = trail
                parts.append(str(key))
            return "/".join(reversed(parts))
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            if isinstance(child, containers):
                stack.append((child, depth + 1, (trail, key)))
    return None


JSON_TOO_DEEP = "json_too_deep"
"""The error type (pydantic's sense) of a body nested deeper than `MAX_JSON_DEPTH`."""


def json_depth_error(value: Any, limit: int = MAX_JSON_DEPTH) -> dict[str, Any] | None:
    """A validation error (as in a 422's `detail` list) when ``value`` nests too deep; else None."""
    where = json_too_deep(value, limit)
    if where is None:
        return None
    return {"type": JSON_TOO_DEEP, "loc": ["body"], "msg": f"JSON nests deeper than {limit} levels (at {where})"}


class DepthBounded(BaseModel):
    """A message read straight from the wire (the worker channel): refused (422, error type
    `json_too_deep`) when it nests deeper than `MAX_JSON_DEPTH`, before any other check walks it.
    Stream requests are held to the same limit where they are decoded (`transport.envelope`)."""

    @model_validator(mode="before")
    @classmethod
    def _bounded_depth(cls, value: Any) -> Any:
        error = json_depth_error(value)
        if error is not None:
            raise PydanticCustomError(JSON_TOO_DEEP, error["msg"])
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(item) for item in value)
    return False


class ActionModel(BaseModel):
    """A request body: unknown keys are an error (422), as in Prefect's action models.

    PostgreSQL text and JSONB cannot hold NUL characters, so a string with one is refused here
    (422) rather than failing in the database."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("text cannot contain NUL (\\u0000) characters")
        return value


class OptionalBody(ActionModel):
    """A request whose parameters are all optional: an absent (empty) body means all defaults."""

    @model_validator(mode="before")
    @classmethod
    def _absent_is_empty(cls, value: object) -> object:
        return {} if value is None or value in ("", b"") else value


class ResponseModel(BaseModel):
    """A result: unknown attributes are ignored so older clients read newer replies."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class WorkPoolStatus(StrEnum):
    READY = "READY"
    NOT_READY = "NOT_READY"
    PAUSED = "PAUSED"


WorkQueueStatus = WorkPoolStatus


class WorkerStatus(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"


class DeploymentStatus(StrEnum):
    READY = "READY"
    NOT_READY = "NOT_READY"


class StateType(StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


Operator = Literal["and_", "or_"]
