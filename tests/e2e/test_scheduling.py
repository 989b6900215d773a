"""The worker poll through the client: the worked examples of docs/poll.md are the test vectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from client import ObjectNotFound, WorkPoolClient


async def make_runs(client: WorkPoolClient, pool: str, queue: str, now: datetime) -> list[str]:
    """1 RUNNING, 1 PENDING and 5 SCHEDULED runs (now-1h .. now+3h); returns the scheduled ids."""
    for state in ("RUNNING", "PENDING"):
        await client.create_flow_run({"work_pool_name": pool, "work_queue_name": queue, "state": {"type": state}})
    ids = []
    for hours in (-1, 0, 1, 2, 3):
        run = await client.create_flow_run(
            {
                "work_pool_name": pool,
                "work_queue_name": queue,
                "next_scheduled_start_time": now + timedelta(hours=hours),
            }
        )
        ids.append(str(run.id))
    return ids


@pytest.fixture
async def pool_a(client: WorkPoolClient):
    """Pool A: default(1, empty), AA(2), AB(3), AC(4), each of AA/AB/AC as in make_runs."""
    now = datetime.now(UTC).replace(microsecond=0)
    await client.create_work_pool({"name": "A", "type": "process"})
    runs = {}
    for name in ("AA", "AB", "AC"):
        await client.create_work_queue("A", {"name": name})
        runs[name] = await make_runs(client, "A", name, now)
    return now, runs


def ids(items) -> list[str]:
    return [str(item.flow_run.id) for item in items]


async def test_poll_returns_runs_in_priority_then_time_order(client, pool_a):
    now, runs = pool_a
    items = await client.get_scheduled_flow_runs_for_work_pool("A")
    assert ids(items) == runs["AA"] + runs["AB"] + runs["AC"]
    pool = await client.read_work_pool("A")
    assert {item.work_pool_id for item in items} == {pool.id}
    assert all(item.flow_run.state_type == "SCHEDULED" and item.flow_run.state is None for item in items)


async def test_limit_and_time_bounds(client, pool_a):
    now, runs = pool_a
    everything = runs["AA"] + runs["AB"] + runs["AC"]
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A", limit=7)) == everything[:7]
    # Prefect's vectors poll a moment after the runs were made:
    later = now + timedelta(seconds=1)
    assert len(await client.get_scheduled_flow_runs_for_work_pool("A", scheduled_before=later)) == 6
    assert len(await client.get_scheduled_flow_runs_for_work_pool("A", scheduled_after=later)) == 9
    none = await client.get_scheduled_flow_runs_for_work_pool(
        "A", scheduled_before=later - timedelta(hours=1), scheduled_after=later
    )
    assert none == []
    # both bounds are inclusive
    assert len(await client.get_scheduled_flow_runs_for_work_pool("A", scheduled_before=now)) == 6
    assert len(await client.get_scheduled_flow_runs_for_work_pool("A", scheduled_after=now)) == 12
    exact = await client.get_scheduled_flow_runs_for_work_pool("A", ["AA"], scheduled_before=now, scheduled_after=now)
    assert ids(exact) == [runs["AA"][1]]


async def test_queue_names_select_queues_and_unknown_names_are_404(client, pool_a):
    now, runs = pool_a
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A", ["AA"])) == runs["AA"]
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A", ["AB", "AA"])) == runs["AA"] + runs["AB"]
    await client.create_work_pool({"name": "B", "type": "process"})
    await client.create_work_queue("B", {"name": "BA"})
    with pytest.raises(ObjectNotFound) as raised:
        await client.get_scheduled_flow_runs_for_work_pool("A", ["AA", "BA"])
    assert raised.value.detail == "Work pool queue 'A/BA' not found."
    with pytest.raises(ObjectNotFound) as raised:
        await client.get_scheduled_flow_runs_for_work_pool("nope")
    assert raised.value.detail == 'Work pool "nope" not found.'


@pytest.mark.parametrize(("limit", "expected"), [(10, 5), (5, 3), (2, 0)])
async def test_queue_concurrency_limit(client, pool_a, limit, expected):
    now, runs = pool_a
    await client.update_work_queue("A", "AA", {"concurrency_limit": limit})
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A", ["AA"])) == runs["AA"][:expected]


@pytest.mark.parametrize(("limit", "expected"), [(20, 5), (10, 4), (7, 1), (2, 0)])
async def test_pool_limit_polling_one_queue_counts_all_queues(client, pool_a, limit, expected):
    now, runs = pool_a
    await client.update_work_pool("A", {"concurrency_limit": limit})
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A", ["AA"])) == runs["AA"][:expected]


@pytest.mark.parametrize(("limit", "expected"), [(25, 15), (16, 10), (7, 1), (2, 0)])
async def test_pool_limit_polling_all_queues_serves_priorities_first(client, pool_a, limit, expected):
    now, runs = pool_a
    await client.update_work_pool("A", {"concurrency_limit": limit})
    everything = runs["AA"] + runs["AB"] + runs["AC"]
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A")) == everything[:expected]


async def test_paused_queue_and_paused_pool_hand_out_nothing(client, pool_a):
    now, runs = pool_a
    await client.update_work_queue("A", "AA", {"is_paused": True})
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("A")) == runs["AB"] + runs["AC"]
    await client.update_work_pool("A", {"is_paused": True})
    assert await client.get_scheduled_flow_runs_for_work_pool("A") == []


async def test_runs_retrying_in_process_and_other_states_are_not_candidates(client):
    await client.create_work_pool({"name": "R", "type": "process"})
    retrying = await client.create_flow_run({"work_pool_name": "R", "empirical_policy": {"retry_type": "in_process"}})
    late = await client.create_flow_run({"work_pool_name": "R", "state": {"type": "SCHEDULED", "name": "Late"}})
    await client.create_flow_run({"work_pool_name": "R", "state": {"type": "COMPLETED"}})
    got = ids(await client.get_scheduled_flow_runs_for_work_pool("R"))
    assert got == [str(late.id)]
    assert str(retrying.id) not in got


async def test_limit_validation(client, pool_a):
    from client import InvalidRequest

    with pytest.raises(InvalidRequest) as raised:
        await client.get_scheduled_flow_runs_for_work_pool("A", limit=201)
    assert raised.value.detail == "Invalid limit: must be less than or equal to 200."
    assert await client.get_scheduled_flow_runs_for_work_pool("A", limit=0) == []


async def test_pending_compare_and_set_race(client):
    await client.create_work_pool({"name": "C", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "C"})
    import asyncio

    results = await asyncio.gather(*(client.set_flow_run_state(run.id, {"type": "PENDING"}) for _ in range(16)))
    statuses = sorted(r.status for r in results)
    assert statuses == ["ABORT"] * 15 + ["ACCEPT"]
    aborted = [r for r in results if r.status == "ABORT"]
    assert {r.details["reason"] for r in aborted} == {
        "This run is in a PENDING state and cannot transition to a PENDING state."
    }
    assert (await client.read_flow_run(run.id)).state_type == "PENDING"


async def test_ordinary_path_and_slot_release(client):
    await client.create_work_pool({"name": "D", "type": "process"})
    await client.update_work_queue("D", "default", {"concurrency_limit": 1})
    first = await client.create_flow_run({"work_pool_name": "D"})
    second = await client.create_flow_run({"work_pool_name": "D"})
    for state in ("PENDING", "RUNNING"):
        result = await client.set_flow_run_state(first.id, {"type": state})
        assert (result.status, result.state.type) == ("ACCEPT", state)
    assert await client.get_scheduled_flow_runs_for_work_pool("D") == []
    assert (await client.read_work_queue("D", "default")).active_slots == 1
    done = await client.set_flow_run_state(first.id, {"type": "COMPLETED"})
    assert (done.status, done.state.type, done.state.name) == ("ACCEPT", "COMPLETED", "Completed")
    assert ids(await client.get_scheduled_flow_runs_for_work_pool("D")) == [str(second.id)]
    ran = await client.read_flow_run(first.id)
    assert ran.run_count == 1 and ran.start_time is not None and ran.end_time is not None
    again = await client.set_flow_run_state(first.id, {"type": "CANCELLING"})
    assert (again.status, again.details["reason"]) == ("ABORT", "Run is already in terminal state COMPLETED.")
