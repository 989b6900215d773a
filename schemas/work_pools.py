"""Work pool contracts: create/update bodies, the response, the filter and the RPC requests."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field, field_validator

from schemas.common import (
    ActionModel,
    NonNegativeInt,
    Operator,
    OptionalBody,
    PoolName,
    ResponseModel,
    UTCDateTime,
    WorkPoolStatus,
)
from schemas.job_templates import validate_base_job_template


class WorkPoolStorageConfiguration(ActionModel):
    bundle_upload_step: dict[str, Any] | None = None
    bundle_execution_step: dict[str, Any] | None = None
    default_result_storage_block_id: UUID | None = None


def _check_template(value: dict[str, Any]) -> dict[str, Any]:
    validate_base_job_template(value)
    return value


class WorkPoolCreate(ActionModel):
    name: PoolName
    description: str | None = None
    type: str = "prefect-agent"
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    is_paused: bool = False
    concurrency_limit: NonNegativeInt | None = None
    storage_configuration: WorkPoolStorageConfiguration = Field(default_factory=WorkPoolStorageConfiguration)

    _template = field_validator("base_job_template")(_check_template)


class WorkPoolUpdate(ActionModel):
    """Partial update: only the keys present are applied; explicit null only where nullable."""

    description: str | None = None
    is_paused: bool = False
    base_job_template: dict[str, Any] = Field(default_factory=dict)
    concurrency_limit: NonNegativeInt | None = None
    storage_configuration: WorkPoolStorageConfiguration = Field(default_factory=WorkPoolStorageConfiguration)

    _template = field_validator("base_job_template")(_check_template)


class WorkPool(ResponseModel):
    id: UUID
    created: UTCDateTime
    updated: UTCDateTime
    name: str
    description: str | None = None
    type: str
    base_job_template: dict[str, Any]
    is_paused: bool
    concurrency_limit: int | None = None
    status: WorkPoolStatus | None = None
    default_queue_id: UUID | None = None
    storage_configuration: WorkPoolStorageConfiguration
    active_slots: int | None = None


class AnyIds(ActionModel):
    any_: list[UUID] | None = None


class AnyStrings(ActionModel):
    any_: list[str] | None = None


class WorkPoolFilter(ActionModel):
    operator: Operator = "and_"
    id: AnyIds | None = None
    name: AnyStrings | None = None
    type: AnyStrings | None = None


class ReadWorkPool(ActionModel):
    name: str


class ReadWorkPools(OptionalBody):
    work_pools: WorkPoolFilter | None = None
    limit: int | None = None
    offset: NonNegativeInt = 0


class CountWorkPools(OptionalBody):
    work_pools: WorkPoolFilter | None = None


class UpdateWorkPool(ActionModel):
    name: str
    work_pool: WorkPoolUpdate


class DeleteWorkPool(ActionModel):
    name: str
