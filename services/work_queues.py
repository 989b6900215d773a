"""Work queues of a pool: create, read, filter, update, delete (docs/operations.md#work-queues,
docs/statuses.md#queue-status, docs/priorities.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.engine import RowMapping

from schemas.common import WorkQueueStatus
from schemas.work_queues import WorkQueue, WorkQueueCreate, WorkQueueFilter, WorkQueueUpdate
from services import events
from services.db import Database, Row, Statement, Tx
from services.errors import AlreadyExists, Conflict, pool_not_found, queue_not_found
from services.filters import check_limit, queue_condition
from services.idempotency import Logged
from services.priorities import rebalance
from services.tables import flow_run, work_pool, work_queue
from services.work_pools import ACTIVE_STATES, pool_by_name

RECENTLY_POLLED = timedelta(seconds=60)
UPDATE_EVENT_FIELDS = ("name", "description", "concurrency_limit", "priority")

_queue_active = (
    select(func.count())
    .where(flow_run.c.work_queue_id == work_queue.c.id, flow_run.c.state_type.in_(ACTIVE_STATES))
    .scalar_subquery()
)
QUEUE_COLUMNS = (
    work_queue,
    work_pool.c.name.label("work_pool_name"),
    case((work_queue.c.concurrency_limit.is_(None), None), else_=_queue_active).label("active_slots"),
)
QUEUES = select(*QUEUE_COLUMNS).join(work_pool, work_pool.c.id == work_queue.c.work_pool_id)
"""Queues as the model reads them: with their pool's name and, when limited, their active slots."""


def to_work_queue(row: Row) -> WorkQueue:
    """A row of `QUEUES` as the model."""
    return WorkQueue.model_validate(row)


POOL_QUEUE_IDS = Statement.of(
    """
    SELECT p.id AS pool_id, q.id, q.name
      FROM work_pool p JOIN work_queue q ON q.work_pool_id = p.id
     WHERE p.name = :name
    """
)
"""On the hot path of polls (services.db.Statement)."""


async def queue_ids_by_name(tx: Tx, work_pool_name: str) -> tuple[UUID, dict[str, UUID]]:
    """The pool's id and its queue ids by name, in one round trip, or 404 (every pool has its
    default queue, so no row means no pool)."""
    rows = await tx.fetch(POOL_QUEUE_IDS, {"name": work_pool_name})
    if not rows:
        raise pool_not_found(work_pool_name)
    return rows[0]["pool_id"], {row["name"]: row["id"] for row in rows}


async def queue_by_name(tx: Tx, pool: Row, name: str | None, *, lock: bool = False) -> RowMapping:
    """The queue row `name` of `pool` (its default queue when `name` is None), or 404; `lock`
    holds it for a change (FOR NO KEY UPDATE)."""
    condition = work_queue.c.id == pool["default_queue_id"] if name is None else work_queue.c.name == name
    query = select(work_queue).where(work_queue.c.work_pool_id == pool["id"], condition)
    if lock:
        query = query.with_for_update(key_share=True)
    row = (await tx.execute(query)).mappings().first()
    if row is None:
        raise queue_not_found(pool["name"], name or "default")
    return row


async def _pool_priorities(tx: Tx, pool_id: UUID) -> list[tuple[UUID, int]]:
    rows = await tx.execute(select(work_queue.c.id, work_queue.c.priority).where(work_queue.c.work_pool_id == pool_id))
    return [(row.id, row.priority) for row in rows]


async def _apply_rebalance(tx: Tx, pool_id: UUID, target: UUID) -> None:
    for queue_id, priority in rebalance(await _pool_priorities(tx, pool_id), target).items():
        await tx.execute(
            update(work_queue).where(work_queue.c.id == queue_id).values(priority=priority, updated=tx.now)
        )
    # priorities may have moved apart: the pool's next create finds its first free one again
    await tx.execute(update(work_pool).where(work_pool.c.id == pool_id).values(next_priority=None))


_NEW_QUEUE_COLUMNS = """
    INSERT INTO work_queue (id, created, updated, work_pool_id, name, description, is_paused,
                            concurrency_limit, priority, filter, status)
"""
_NEW_QUEUE_VALUES = """
    CAST(:id AS uuid), CAST(:now AS timestamptz), CAST(:now AS timestamptz), {pool_id},
    CAST(:name AS text), CAST(:description AS text), CAST(:is_paused AS boolean),
    CAST(:concurrency_limit AS integer), {priority}, CAST(:filter AS jsonb), CAST(:status AS text)
"""

CREATE_QUEUE = Statement.of(
    f"""
    WITH pool AS (
        SELECT id, name, type, next_priority FROM work_pool WHERE name = :pool_name FOR NO KEY UPDATE
    ), known AS (
        SELECT pool.id, pool.next_priority AS priority FROM pool
         WHERE CAST(:priority AS integer) IS NULL AND pool.next_priority IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM work_queue q
                            WHERE q.work_pool_id = pool.id AND q.priority >= pool.next_priority)
    ), created AS (
        {_NEW_QUEUE_COLUMNS}
        SELECT {_NEW_QUEUE_VALUES.format(pool_id="known.id", priority="known.priority")}
          FROM known
        ON CONFLICT (work_pool_id, name) DO NOTHING
        RETURNING *
    ), counted AS (
        UPDATE work_pool SET next_priority = created.priority + 1 FROM created
         WHERE work_pool.id = created.work_pool_id
    )
    SELECT pool.id AS pool_id, pool.name AS pool_name, pool.type AS pool_type,
           EXISTS (SELECT 1 FROM known) AS known, created.*
      FROM pool LEFT JOIN created ON true
    """
)
"""A queue create in one round trip, when its pool knows the priority it gets: locks the pool
row (FOR NO KEY UPDATE, as `pool_by_name(lock="for_change")`) and inserts the queue with the
pool's `next_priority`, which it advances. The lock returns the row as the last change to the
pool committed it, so a create that waited for another sees its `next_priority`.

`next_priority` is known while the pool's priorities are exactly 1..n: it is n + 1, and no queue
has a priority at or above it (checked here, so queues written by other means are never given a
taken priority). Otherwise (`known` false: a gap, an unknown count, a priority asked for) the
queue is not inserted here, and `INSERT_QUEUE` does it with the pool row locked."""

_FIRST_FREE = """
    coalesce(CAST(:priority AS integer), CASE
        WHEN taken.n = taken.top THEN taken.top + 1
        WHEN NOT EXISTS (SELECT 1 FROM work_queue one WHERE one.work_pool_id = :pool_id AND one.priority = 1)
            THEN 1
        ELSE (SELECT q.priority + 1 FROM work_queue q
               WHERE q.work_pool_id = :pool_id
                 AND NOT EXISTS (SELECT 1 FROM work_queue n
                                  WHERE n.work_pool_id = :pool_id AND n.priority = q.priority + 1)
               ORDER BY q.priority LIMIT 1)
    END)
"""
"""A queue's priority: the one asked for, else its pool's first free one
(`priorities.first_free_priority`), from `taken`: the count and maximum of the pool's priorities."""

INSERT_QUEUE = Statement.of(
    f"""
    WITH taken AS (
        SELECT count(*) AS n, coalesce(max(priority), 0) AS top FROM work_queue WHERE work_pool_id = :pool_id
    ), created AS (
        {_NEW_QUEUE_COLUMNS}
        SELECT {_NEW_QUEUE_VALUES.format(pool_id="CAST(:pool_id AS uuid)", priority=_FIRST_FREE)}
          FROM taken
        ON CONFLICT (work_pool_id, name) DO NOTHING
        RETURNING *
    ), counted AS (
        UPDATE work_pool
           SET next_priority = CASE WHEN CAST(:priority AS integer) IS NULL
                                     AND taken.n + 1 = greatest(taken.top, created.priority) THEN taken.n + 2 END
          FROM created, taken
         WHERE work_pool.id = created.work_pool_id
    )
    SELECT * FROM created
    """
)
"""A new queue, its priority given or the pool's first free one (`priorities.first_free_priority`,
found in the database: a pool without gaps — priorities 1..n — answers from its count and
maximum). Run with the pool row locked, in a statement after the lock's, so it sees every queue
committed before the lock was granted. It sets the pool's `next_priority`: n + 2 when the pool
is then gapless, else unknown (a priority asked for is re-balanced next: unknown too)."""


CREATE_QUEUE_IN_ONE = Statement.of(
    f"""
    WITH pool AS (
        SELECT id, next_priority FROM work_pool
         WHERE name = :pool_name AND id = :pool_id AND type = :pool_type
           FOR NO KEY UPDATE
    ), known AS (
        SELECT pool.id, pool.next_priority AS priority FROM pool
         WHERE pool.next_priority IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM work_queue q
                            WHERE q.work_pool_id = pool.id AND q.priority >= pool.next_priority)
           AND NOT EXISTS (SELECT 1 FROM request_log WHERE request_id = :request_id)
    ), created AS (
        {_NEW_QUEUE_COLUMNS}
        SELECT {_NEW_QUEUE_VALUES.format(pool_id="known.id", priority="known.priority")}
          FROM known
        ON CONFLICT (work_pool_id, name) DO NOTHING
        RETURNING priority
    ), counted AS (
        UPDATE work_pool SET next_priority = created.priority + 1 FROM created
         WHERE work_pool.id = CAST(:pool_id AS uuid)
    ), logged AS (
        INSERT INTO request_log (request_id, op, created, status, reply)
        SELECT CAST(:request_id AS text), CAST(:op AS text), CAST(:now AS timestamptz), CAST(:reply_status AS integer),
               CAST(:reply AS jsonb) || jsonb_build_object('priority', created.priority)
          FROM created
        RETURNING reply::text AS reply
    ), outbox AS (
        INSERT INTO event_outbox (event)
        SELECT e.event FROM logged, jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(event, n)
         ORDER BY e.n
    )
    SELECT reply FROM logged
    """
)
"""A queue create as one autocommit statement (`Database.one_statement`), when its pool's id and
type are as the replica last saw them (`_POOL_HINTS`) and the pool knows the priority the queue
gets: the pool row locked, the queue inserted with `next_priority`, which advances, the request
recorded with its reply, and the queue's event into the outbox. The pool row is locked for this
statement only, not across round trips: creates into one pool take turns far faster.

The reply and the event are written before the statement; the priority is set in the stored
reply by the statement, and the reply sent is the one stored. When it cannot do all of it, it
does nothing (`created` empty) and the create goes the usual way (`create_work_queue`): a pool
unknown or changed, a gap, a taken name, a request id already recorded. The last is checked
against the statement's snapshot; a repeat whose first committed while this one waited for the
pool row finds the name taken, or (the queue deleted meanwhile) fails on the record's key."""

_POOL_HINTS: dict[str, tuple[UUID, str]] = {}
"""Pools' ids and types by name, as this replica's creates last found them: what a create in one
statement needs to write the queue's event beforehand. The statement checks them, so a stale one
only sends the create the usual way, which writes the hint anew."""
POOL_HINTS_KEPT = 10_000


def _remember_pool(name: str, pool_id: UUID, pool_type: str) -> None:
    if len(_POOL_HINTS) >= POOL_HINTS_KEPT and name not in _POOL_HINTS:
        _POOL_HINTS.clear()
    _POOL_HINTS[name] = (pool_id, pool_type)


def _new_queue(work_pool_name: str, data: WorkQueueCreate) -> dict[str, Any]:
    """The parameters of a new queue's row."""
    return {
        "id": uuid4(),
        "pool_name": work_pool_name,
        "name": data.name,
        "description": data.description,
        "is_paused": data.is_paused,
        "concurrency_limit": data.concurrency_limit,
        "priority": data.priority,
        "filter": None if data.filter is None else data.filter.model_dump_json(),
        # Prefect leaves a queue created paused NOT_READY; we start it PAUSED (docs/statuses.md#queue-status).
        "status": WorkQueueStatus.PAUSED if data.is_paused else WorkQueueStatus.NOT_READY,
    }


async def create_work_queue_in_one(
    db: Database, work_pool_name: str, data: WorkQueueCreate, logged: Logged
) -> bytes | None:
    """`create_work_queue` in one statement (`CREATE_QUEUE_IN_ONE`), its request recorded by
    `logged`: the stored reply's JSON text, or None when it did nothing."""
    hint = _POOL_HINTS.get(work_pool_name)
    if hint is None or data.priority is not None:
        return None
    params = _new_queue(work_pool_name, data)
    pool = {"id": hint[0], "name": work_pool_name, "type": hint[1]}
    async with db.one_statement() as tx:
        queue = {
            **params,
            "created": tx.now,
            "updated": tx.now,
            "work_pool_id": pool["id"],
            "priority": 1,  # set by the statement
            "filter": None if data.filter is None else data.filter.model_dump(mode="json"),
            "last_polled": None,
        }
        # a new queue has no runs: its active slots are 0 when it has a limit
        active = None if data.concurrency_limit is None else 0
        reply = logged.dump(to_work_queue({**queue, "work_pool_name": work_pool_name, "active_slots": active}))
        tx.emit(events.queue_event("created", queue, pool, tx.now))
        record = {
            "request_id": logged.request_id,
            "op": logged.op,
            "reply_status": logged.status,
            "reply": reply.decode(),
        }
        try:
            row = await tx.fetchrow(
                CREATE_QUEUE_IN_ONE,
                {
                    **params,
                    **record,
                    "now": tx.now,
                    "pool_id": pool["id"],
                    "pool_type": pool["type"],
                    "events": tx.unwritten_events(),
                },
            )
        except AlreadyExists as exc:
            if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise
            row = None  # the request's record (a repeat), or a priority taken by other means
        if row is None:
            tx.discard_events()
            return None
    stored: str = row["reply"]
    return stored.encode()


_QUEUE_COLUMN_NAMES = tuple(work_queue.c.keys())


async def create_work_queue(db: Database, work_pool_name: str, data: WorkQueueCreate) -> WorkQueue:
    params = _new_queue(work_pool_name, data)
    async with db.transaction() as tx:
        params["now"] = tx.now
        row = await tx.fetchrow(CREATE_QUEUE, params)
        if row is None:
            raise pool_not_found(work_pool_name)
        pool = {"id": row["pool_id"], "name": row["pool_name"], "type": row["pool_type"]}
        if not row["known"]:
            row = await tx.fetchrow(INSERT_QUEUE, {**params, "pool_id": pool["id"]})
        if row is None or row["id"] is None:
            raise AlreadyExists(f"A work queue with this name already exists in work pool {work_pool_name!r}.")
        queue = {column: row[column] for column in _QUEUE_COLUMN_NAMES}
        _remember_pool(pool["name"], pool["id"], pool["type"])
        tx.emit(events.queue_event("created", queue, pool, tx.now))
        if data.priority is not None:
            await _apply_rebalance(tx, pool["id"], queue["id"])
            return to_work_queue((await tx.execute(QUEUES.where(work_queue.c.id == queue["id"]))).mappings().one())
    # a new queue has no runs: its active slots are 0 when it has a limit
    active = None if queue["concurrency_limit"] is None else 0
    return to_work_queue({**queue, "work_pool_name": pool["name"], "active_slots": active})


async def read_work_queue(db: Database, work_pool_name: str, name: str) -> WorkQueue:
    async with db.read() as tx:
        query = QUEUES.where(work_pool.c.name == work_pool_name, work_queue.c.name == name)
        row = (await tx.execute(query)).mappings().first()
    if row is None:
        raise queue_not_found(work_pool_name, name)
    return to_work_queue(row)


async def read_work_queues(
    db: Database,
    work_pool_name: str,
    work_queue_filter: WorkQueueFilter | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[WorkQueue]:
    limit = check_limit(limit)
    async with db.read() as tx:
        pool = await pool_by_name(tx, work_pool_name)
        rows = await tx.execute(
            QUEUES.where(work_queue.c.work_pool_id == pool["id"], queue_condition(work_queue_filter))
            .order_by(work_queue.c.priority)
            .offset(offset)
            .limit(limit)
        )
        return [to_work_queue(row) for row in rows.mappings()]


def _unpause_status(queue: Row, changes: dict[str, Any], now: datetime) -> WorkQueueStatus:
    last_polled = changes["last_polled"] if "last_polled" in changes else queue["last_polled"]
    if last_polled is not None and now - last_polled <= RECENTLY_POLLED:
        return WorkQueueStatus.READY
    return WorkQueueStatus.NOT_READY


async def update_work_queue(db: Database, work_pool_name: str, name: str, data: WorkQueueUpdate) -> None:
    fields = data.model_fields_set
    changes = {field: getattr(data, field) for field in fields}
    if "filter" in changes and data.filter is not None:
        changes["filter"] = data.filter.model_dump(mode="json")
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, work_pool_name, lock="for_change")
        queue = await queue_by_name(tx, pool, name, lock=True)
        status = None
        if "is_paused" in fields:
            if data.is_paused and queue["status"] != WorkQueueStatus.PAUSED:
                status = WorkQueueStatus.PAUSED
            elif not data.is_paused and queue["status"] == WorkQueueStatus.PAUSED:
                status = _unpause_status(queue, changes, tx.now)
        values = {**changes, "updated": tx.now, **({"status": status} if status else {})}
        await tx.execute(update(work_queue).where(work_queue.c.id == queue["id"]).values(values))
        current = {**queue, **changes}
        tx.wake(work_pool_name)  # un-paused or a larger limit: waiting pollers look again
        payload = events.updated_payload(queue, changes, UPDATE_EVENT_FIELDS)
        if payload:
            tx.emit(events.queue_event("updated", current, pool, tx.now, payload=payload))
        if "priority" in fields:
            await _apply_rebalance(tx, pool["id"], queue["id"])
        if status:
            tx.emit(events.queue_event(events.STATUS_EVENT[status], current, pool, tx.now))


async def delete_work_queue(db: Database, work_pool_name: str, name: str) -> None:
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, work_pool_name, lock="for_change")
        queue = await queue_by_name(tx, pool, name, lock=True)
        if queue["id"] == pool["default_queue_id"]:
            raise Conflict("Can't delete a pool's default queue.")
        tx.emit(events.queue_event("deleted", queue, pool, tx.now))
        await tx.execute(delete(work_queue).where(work_queue.c.id == queue["id"]))
        # the last queue of a gapless pool leaves it gapless; any other leaves a gap
        gapless = work_pool.c.next_priority == queue["priority"] + 1
        next_priority = case((gapless, queue["priority"]), else_=None)
        await tx.execute(update(work_pool).where(work_pool.c.id == pool["id"]).values(next_priority=next_priority))
