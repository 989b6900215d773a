"""Event builders (docs/events.md), without a database: the one event shape, `follows` within
ten minutes of the previous status event, and the `updated` payload of what really changed."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from schemas.events import Event
from services import events

NOW = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
POOL = {"id": uuid4(), "name": "p", "type": "process", "default_queue_id": uuid4()}


def test_an_event_is_the_schema_shape_and_dumps_as_json():
    built = events.pool_event("created", POOL, NOW)
    assert isinstance(built, Event)
    dumped = built.model_dump(mode="json")
    assert Event.model_validate(dumped) == built
    assert (dumped["event"], dumped["occurred"], dumped["payload"], dumped["follows"]) == (
        "prefect.work-pool.created",
        "2026-05-01T09:30:00Z",
        {},
        None,
    )
    assert dumped["resource"] == {
        "prefect.resource.id": f"prefect.work-pool.{POOL['id']}",
        "prefect.resource.name": "p",
        "prefect.work-pool.type": "process",
        "prefect.resource.role": "work-pool",
    }
    assert dumped["related"] == [
        {
            "prefect.resource.id": f"prefect.work-queue.{POOL['default_queue_id']}",
            "prefect.resource.role": "default-queue",
        }
    ]
    assert UUID(dumped["id"]).version == 7


def test_a_status_event_follows_the_previous_one_within_ten_minutes():
    previous = uuid4()
    for ago, follows in [(timedelta(minutes=9, seconds=59), previous), (timedelta(minutes=10), None)]:
        pool = {**POOL, "last_status_event_id": previous, "last_transitioned_status_at": NOW - ago}
        values, announced = events.pool_status_change(pool, "READY", NOW)
        assert (announced.event, announced.follows, announced.occurred) == ("prefect.work-pool.ready", follows, NOW)
        assert values == {"status": "READY", "last_status_event_id": announced.id, "last_transitioned_status_at": NOW}
    _, first = events.pool_status_change({**POOL, "last_transitioned_status_at": None}, "PAUSED", NOW)
    assert (first.event, first.follows) == ("prefect.work-pool.paused", None)


def test_the_updated_payload_names_only_what_changed_in_field_order():
    before = {"description": "a", "concurrency_limit": None, "priority": 2}
    fields = ("description", "concurrency_limit", "priority")
    assert events.updated_payload(before, {"priority": 2, "description": "a"}, fields) is None
    assert events.updated_payload(before, {"priority": 3, "concurrency_limit": 5, "other": 1}, fields) == {
        "updated_fields": ["concurrency_limit", "priority"],
        "updates": {"concurrency_limit": {"from": None, "to": 5}, "priority": {"from": 2, "to": 3}},
    }
