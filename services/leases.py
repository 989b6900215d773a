"""Claim-mode leases: expiry, renewal by heartbeats, release of leases heartbeats stop naming, fencing.

A lease is held from the claim through PENDING and RUNNING, renewed by the holder's heartbeats
and state changes, and ends with a terminal state or a give-back (SCHEDULED). A lease that runs
out puts the run back: a SCHEDULED run is simply free again; a PENDING or RUNNING run is
SCHEDULED again ("Rescheduled") for another worker. Each expiry emits one event.
The sweep is the only way a lease ends by time: until it has run, a lease past its end still
holds its run and its slot (no poll hands the run out, nobody else may start it), while its
holder's token is already refused. So a holder's last-moment state change and a claim of its
slot never both succeed, and every lease that runs out has its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import DateTime, Uuid, bindparam, text
from sqlalchemy.engine import RowMapping

from schemas.events import Event
from services import events
from services.db import Database, Kind, Tx

RELEASE_EXPIRED_LEASES = text(
    """
    WITH expired AS (
        SELECT f.id, f.state_type AS was, f.lease_owner AS owner, f.lease_token AS token, p.name AS pool_name
          FROM flow_run f
          LEFT JOIN work_queue q ON q.id = f.work_queue_id
          LEFT JOIN work_pool p ON p.id = q.work_pool_id
         WHERE f.lease_expires <= :now
         ORDER BY f.id
         LIMIT 1000
           FOR NO KEY UPDATE OF f SKIP LOCKED
    )
    UPDATE flow_run f
       SET lease_owner = NULL, lease_expires = NULL, updated = :now,
           state_type = CASE WHEN expired.was IN ('PENDING', 'RUNNING') THEN 'SCHEDULED' ELSE f.state_type END,
           state_name = CASE WHEN expired.was IN ('PENDING', 'RUNNING') THEN 'Rescheduled' ELSE f.state_name END,
           state_id = CASE WHEN expired.was IN ('PENDING', 'RUNNING') THEN gen_random_uuid() ELSE f.state_id END,
           state_timestamp = CASE WHEN expired.was IN ('PENDING', 'RUNNING') THEN :now ELSE f.state_timestamp END,
           state_message = CASE WHEN expired.was IN ('PENDING', 'RUNNING')
                                THEN 'The lease of ' || expired.owner || ' ended.' ELSE f.state_message END,
           next_scheduled_start_time = CASE WHEN expired.was IN ('PENDING', 'RUNNING') THEN :now
                                            ELSE f.next_scheduled_start_time END
      FROM expired
     WHERE f.id = expired.id
 RETURNING f.id, f.name, expired.was, expired.owner, expired.token, expired.pool_name
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)))

LEASE_GRACE_SECONDS = 5.0
"""A lease its holder's heartbeats stop naming is released once it is this old (a claim younger
than this may still be on its way to the worker)."""

# A renewal runs from when its heartbeat was sent (`seen`, on the replica's clock), not from when
# it is written: a heartbeat that waited (on its way, or in a batch behind a slow write) renews no further than it would have
# on time, so a dead worker's leases never outlive its last heartbeat by more than their length.
# It never shortens a lease that a later heartbeat renewed further.
RENEW_ALL = text(
    """
    UPDATE flow_run f
       SET lease_seconds = greatest(f.lease_seconds, w.tolerance),
           lease_expires = greatest(f.lease_expires,
                                    w.seen + greatest(f.lease_seconds, w.tolerance) * interval '1 second')
      FROM work_queue q,
           unnest(CAST(:names AS text[]), CAST(:tolerances AS float8[]), CAST(:seen AS timestamptz[]))
               AS w(name, tolerance, seen)
     WHERE f.lease_owner = w.name AND f.lease_expires > :now
       AND q.id = f.work_queue_id AND q.work_pool_id = :pool_id
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)), bindparam("pool_id", type_=Uuid))
"""Prefect-compatible heartbeats (no tokens): every live lease of those workers is renewed."""

RENEW_NAMED = text(
    """
    UPDATE flow_run f
       SET lease_seconds = greatest(f.lease_seconds, n.tolerance),
           lease_expires = greatest(f.lease_expires,
                                    n.seen + greatest(f.lease_seconds, n.tolerance) * interval '1 second')
      FROM work_queue q,
           unnest(CAST(:names AS text[]), CAST(:tokens AS bigint[]), CAST(:tolerances AS float8[]),
                  CAST(:seen AS timestamptz[]))
               AS n(name, token, tolerance, seen)
     WHERE f.lease_owner = n.name AND f.lease_token = n.token AND f.lease_expires > :now
       AND q.id = f.work_queue_id AND q.work_pool_id = :pool_id
 RETURNING f.lease_owner AS owner, f.lease_token AS token,
           extract(epoch FROM f.lease_expires - :now) AS seconds_left
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)), bindparam("pool_id", type_=Uuid))
"""Exactly the leases each worker names (its own, still live) are renewed."""

END_UNNAMED = text(
    """
    UPDATE flow_run f
       SET lease_expires = :now
      FROM work_queue q
     WHERE f.lease_owner = ANY(CAST(:names AS text[])) AND f.lease_expires > :now
       AND NOT (f.lease_token = ANY(CAST(:named AS bigint[])))
       AND f.lease_expires - f.lease_seconds * interval '1 second' < :now - :grace * interval '1 second'
       AND q.id = f.work_queue_id AND q.work_pool_id = :pool_id
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)), bindparam("pool_id", type_=Uuid))
"""Leases of these workers that their heartbeat did not name and that were last renewed (or
claimed) more than the grace ago: they end now; the next expiry sweep gives the runs back."""


async def renew(tx: Tx, pool_id: UUID, holders: Sequence[tuple[str, float | None, datetime]]) -> None:
    """Heartbeats without tokens renew every live lease of their workers, for at least their
    tolerance (worker name, seconds, when the heartbeat was sent)."""
    if holders:
        await tx.execute(
            RENEW_ALL,
            {
                "now": tx.now,
                "pool_id": pool_id,
                "names": [name for name, _, _ in holders],
                "tolerances": [float(tolerance or 0) for _, tolerance, _ in holders],
                "seen": [seen for _, _, seen in holders],
            },
        )


async def renew_named(
    tx: Tx,
    pool_id: UUID,
    holders: Sequence[tuple[str, Sequence[int], float | None, datetime]],
    grace_seconds: float = LEASE_GRACE_SECONDS,
) -> dict[str, dict[int, float]]:
    """Heartbeats that name their leases (worker name, tokens, tolerance, when sent): exactly
    those are renewed; the workers' other leases older than the grace end now. Returns, per
    worker, the leases renewed and the seconds each has left from now."""
    if not holders:
        return {}
    names, tokens, tolerances, seen = [], [], [], []
    for name, held, tolerance, seen_at in holders:
        for token in held:
            names.append(name)
            tokens.append(token)
            tolerances.append(float(tolerance or 0))
            seen.append(seen_at)
    renewed: dict[str, dict[int, float]] = {name: {} for name, _, _, _ in holders}
    if tokens:
        params = {
            "now": tx.now,
            "pool_id": pool_id,
            "names": names,
            "tokens": tokens,
            "tolerances": tolerances,
            "seen": seen,
        }
        for row in (await tx.execute(RENEW_NAMED, params)).mappings():
            renewed[row["owner"]][row["token"]] = float(row["seconds_left"])
    await tx.execute(
        END_UNNAMED,
        {
            "now": tx.now,
            "pool_id": pool_id,
            "names": list(renewed),
            "named": tokens,
            "grace": grace_seconds,
        },
    )
    return renewed


async def expire_leases(db: Database, now: datetime | None = None) -> int:
    """Give back every run whose lease has run out; one event each."""
    async with db.transaction(now, Kind.BACKGROUND) as tx:
        rows = (await tx.execute(RELEASE_EXPIRED_LEASES, {"now": tx.now})).mappings().all()
        for row in rows:
            tx.emit(_expired_event(row, tx.now))
            tx.wake(row["pool_name"])
    for row in rows:  # a claim never confirmed (still SCHEDULED), or a PENDING/RUNNING run put back
        db.observe(
            "lease_ended", pool=row["pool_name"], reason="expired" if row["was"] != "SCHEDULED" else "not_confirmed"
        )
    return len(rows)


def _expired_event(row: RowMapping, now: datetime) -> Event:
    resource = {"prefect.resource.id": f"prefect.flow-run.{row['id']}", "prefect.resource.name": row["name"]}
    payload = {
        "worker": row["owner"],
        "lease_token": row["token"],
        "state_type": row["was"],
        "rescheduled": row["was"] in ("PENDING", "RUNNING"),
    }
    return events.event("workpools.flow-run.lease-expired", resource, now, payload=payload)
