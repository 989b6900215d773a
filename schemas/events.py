"""The event shape appended to `{prefix}.events` (Prefect's event names and labels)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field

from schemas.common import ResponseModel, UTCDateTime


class Event(ResponseModel):
    id: UUID
    occurred: UTCDateTime
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)
    follows: UUID | None = None
