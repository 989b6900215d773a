"""Building blocks shared by every contract: base models, names, limits, enums, UTC datetimes."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

DEFAULT_LIMIT = 200
"""Default and maximum `limit` of every filter and poll (Prefect's `server.api.default_limit`)."""


def as_utc(value: datetime) -> datetime:
    """Read a naive datetime as UTC; convert an aware one to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]

NAME_PATTERN = r"^[^/%&><]+$"
"""Names of pools and queues may not contain `/ % & > <` (they are addressed by name)."""


def _not_blank(value: str) -> str:
    if not value.strip(" '\""):
        raise ValueError("name cannot be an empty string")
    return value


QueueName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
PoolName = Annotated[QueueName, AfterValidator(_not_blank)]


class ActionModel(BaseModel):
    """A request body: unknown keys are an error (422), as in Prefect's action models."""

    model_config = ConfigDict(extra="forbid")


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
