"""Prefect's filter objects and limits, turned into SQL conditions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, false, or_, true
from sqlalchemy.sql import ColumnElement

from schemas.common import DEFAULT_LIMIT
from schemas.deployments import DeploymentFilter
from schemas.flow_runs import FlowRunFilter
from schemas.work_pools import WorkPoolFilter
from schemas.work_queues import WorkQueueFilter
from schemas.workers import WorkerFilter
from services.errors import Invalid
from services.tables import deployment, flow_run, work_pool, work_queue, worker

MAX_QUERY_ARGUMENTS = 32767
"""PostgreSQL's limit on one statement's arguments: a filter that needs more is refused."""


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 0:
        raise Invalid("Invalid limit: must be greater than or equal to 0.")
    if limit > DEFAULT_LIMIT:
        raise Invalid(f"Invalid limit: must be less than or equal to {DEFAULT_LIMIT}.")
    return limit


def _combine(operator: str, conditions: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return (or_ if operator == "or_" else and_)(*conditions)


def pool_condition(f: WorkPoolFilter | None) -> ColumnElement[bool]:
    if f is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if f.id is not None and f.id.any_ is not None:
        conditions.append(work_pool.c.id.in_(f.id.any_))
    if f.name is not None and f.name.any_ is not None:
        conditions.append(work_pool.c.name.in_(f.name.any_))
    if f.type is not None and f.type.any_ is not None:
        conditions.append(work_pool.c.type.in_(f.type.any_))
    return _combine(f.operator, conditions)


def queue_condition(f: WorkQueueFilter | None) -> ColumnElement[bool]:
    if f is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if f.id is not None and f.id.any_ is not None:
        conditions.append(work_queue.c.id.in_(f.id.any_))
    if f.name is not None:
        name: list[ColumnElement[bool]] = []
        if f.name.any_ is not None:
            name.append(work_queue.c.name.in_(f.name.any_))
        if f.name.startswith_ is not None:
            if len(f.name.startswith_) > MAX_QUERY_ARGUMENTS:  # one argument each: refused before
                # seconds of CPU go into building and compiling a statement PostgreSQL refuses
                raise Invalid(f"Invalid value: the number of query arguments cannot exceed {MAX_QUERY_ARGUMENTS}")
            # ILIKE 'prefix%' as in Prefect (so `_` and `%` inside a prefix are wildcards)
            prefixes = [work_queue.c.name.ilike(f"{p}%") for p in f.name.startswith_]
            name.append(or_(*prefixes) if prefixes else false())
        if name:
            conditions.append(and_(*name))
    return _combine(f.operator, conditions)


def worker_condition(f: WorkerFilter | None) -> ColumnElement[bool]:
    if f is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if f.last_heartbeat_time is not None:
        if f.last_heartbeat_time.before_ is not None:
            conditions.append(worker.c.last_heartbeat_time <= f.last_heartbeat_time.before_)
        if f.last_heartbeat_time.after_ is not None:
            conditions.append(worker.c.last_heartbeat_time >= f.last_heartbeat_time.after_)
    if f.status is not None:
        if f.status.any_ is not None:
            conditions.append(worker.c.status.in_([s.value for s in f.status.any_]))
        if f.status.not_any_:
            conditions.append(worker.c.status.not_in([s.value for s in f.status.not_any_]))
    return _combine(f.operator, conditions)


def flow_run_condition(f: FlowRunFilter | None) -> ColumnElement[bool]:
    if f is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if f.id is not None and f.id.any_ is not None:
        conditions.append(flow_run.c.id.in_(f.id.any_))
    if f.name is not None and f.name.any_ is not None:
        conditions.append(flow_run.c.name.in_(f.name.any_))
    if f.deployment_id is not None and f.deployment_id.any_ is not None:
        conditions.append(flow_run.c.deployment_id.in_(f.deployment_id.any_))
    if f.state is not None and f.state.type is not None and f.state.type.any_ is not None:
        conditions.append(flow_run.c.state_type.in_([t.value for t in f.state.type.any_]))
    return _combine(f.operator, conditions)


def deployment_condition(f: DeploymentFilter | None) -> ColumnElement[bool]:
    if f is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if f.id is not None and f.id.any_ is not None:
        conditions.append(deployment.c.id.in_(f.id.any_))
    if f.name is not None and f.name.any_ is not None:
        conditions.append(deployment.c.name.in_(f.name.any_))
    return _combine(f.operator, conditions)
