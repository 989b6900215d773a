"""Builders for the events of docs/events.md, with Prefect's names, resources and related resources.
The shape of an event is `schemas.events.Event`."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from schemas.events import Event
from services.db import Row

FOLLOWS_WINDOW = timedelta(minutes=10)


def uuid7() -> UUID:
    """A time-ordered UUID (RFC 9562 version 7), as Prefect uses for event ids."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant
    return UUID(int=value)


def event(
    name: str,
    resource: dict[str, str],
    occurred: datetime,
    *,
    related: list[dict[str, str]] | None = None,
    payload: dict[str, Any] | None = None,
    id: UUID | None = None,
    follows: UUID | None = None,
) -> Event:
    return Event(
        id=id or uuid7(),
        occurred=occurred,
        event=name,
        resource=resource,
        related=related or [],
        payload=payload or {},
        follows=follows,
    )


def pool_resource(pool: Row, *, role: bool = True) -> dict[str, str]:
    labels = {
        "prefect.resource.id": f"prefect.work-pool.{pool['id']}",
        "prefect.resource.name": pool["name"],
        "prefect.work-pool.type": pool["type"],
    }
    if role:
        labels["prefect.resource.role"] = "work-pool"
    return labels


def queue_resource(queue: Row) -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect.work-queue.{queue['id']}",
        "prefect.resource.name": queue["name"],
        "prefect.resource.role": "work-queue",
    }


def pool_event(name: str, pool: Row, now: datetime, **kwargs: Any) -> Event:
    """`prefect.work-pool.created|deleted|updated`."""
    related = (
        [
            {
                "prefect.resource.id": f"prefect.work-queue.{pool['default_queue_id']}",
                "prefect.resource.role": "default-queue",
            }
        ]
        if name != "updated"
        else []
    )
    storage = pool.get("storage_configuration") or {}
    if name != "updated" and storage.get("default_result_storage_block_id"):
        related.append(
            {
                "prefect.resource.id": f"prefect.block-document.{storage['default_result_storage_block_id']}",
                "prefect.resource.role": "result-storage",
            }
        )
    return event(f"prefect.work-pool.{name}", pool_resource(pool), now, related=related, **kwargs)


def queue_event(name: str, queue: Row, pool: Row, now: datetime, **kwargs: Any) -> Event:
    """`prefect.work-queue.created|deleted|updated|ready|not-ready|paused`."""
    return event(f"prefect.work-queue.{name}", queue_resource(queue), now, related=[pool_resource(pool)], **kwargs)


STATUS_EVENT = {"READY": "ready", "NOT_READY": "not-ready", "PAUSED": "paused"}


def pool_status_change(pool: Row, status: str, now: datetime) -> tuple[dict[str, Any], Event]:
    """A pool status (re)assignment: the columns to store and its event (with `follows`)."""
    event_id = uuid7()
    previous_at = pool.get("last_transitioned_status_at")
    follows = (
        pool.get("last_status_event_id") if previous_at is not None and now - previous_at < FOLLOWS_WINDOW else None
    )
    values = {"status": status, "last_status_event_id": event_id, "last_transitioned_status_at": now}
    announced = event(
        f"prefect.work-pool.{STATUS_EVENT[status]}", pool_resource(pool, role=False), now, id=event_id, follows=follows
    )
    return values, announced


def updated_payload(before: Row, changes: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any] | None:
    """Prefect's `updated` payload for the fields that really changed, in model order."""
    changed = [f for f in fields if f in changes and changes[f] != before[f]]
    if not changed:
        return None
    return {
        "updated_fields": changed,
        "updates": {f: {"from": _jsonable(before[f]), "to": _jsonable(changes[f])} for f in changed},
    }


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, (UUID, datetime)) else value


def deployment_event(name: str, row: Row, occurred: datetime) -> Event:
    """`prefect.deployment.ready|not-ready`; `row` has the deployment with its queue and pool."""
    related = []
    if row.get("flow_id"):
        related.append({"prefect.resource.id": f"prefect.flow.{row['flow_id']}", "prefect.resource.role": "flow"})
    if row.get("queue_id"):
        related.append(
            {
                "prefect.resource.id": f"prefect.work-queue.{row['queue_id']}",
                "prefect.resource.name": row["queue_name"],
                "prefect.resource.role": "work-queue",
            }
        )
    if row.get("pool_id"):
        related.append(pool_resource({"id": row["pool_id"], "name": row["pool_name"], "type": row["pool_type"]}))
    resource = {"prefect.resource.id": f"prefect.deployment.{row['id']}", "prefect.resource.name": row["name"]}
    return event(f"prefect.deployment.{name}", resource, occurred, related=related)
