"""Hostile and malformed requests, generated with hypothesis, for every operation: wrong types,
missing and unknown fields, huge strings and lists, odd unicode, bytes that are not JSON, bodies
sent to another operation's stream. Each one is answered at once with a 4xx (never a 5xx, never
a timeout), the service keeps serving, and the database does not change."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sqlalchemy import text

from client import InvalidRequest, WorkerClient
from schemas import wire
from schemas.channels import Op
from schemas.common import json_too_deep
from schemas.deployments import DeploymentCreate, ReadDeployment, ReadDeployments
from schemas.flow_runs import FlowRunCreate, ReadFlowRun, ReadFlowRuns, SetFlowRunState
from schemas.scheduling import GetScheduledFlowRuns, PreviewScheduledFlowRuns
from schemas.work_pools import (
    CountWorkPools,
    DeleteWorkPool,
    ReadWorkPool,
    ReadWorkPools,
    UpdateWorkPool,
    WorkPoolCreate,
)
from schemas.work_queues import CreateWorkQueue, DeleteWorkQueue, ReadWorkQueue, ReadWorkQueues, UpdateWorkQueue
from schemas.worker_channel import HeartbeatMessage
from schemas.workers import DeleteWorker, ReadWorkers, WorkerHeartbeat
from services.tables import metadata
from tests.factories import wait_until
from tests.hostile_schemas import nested_values, variables_schemas

SOME_ID = "0b6f6a46-8f54-4a8e-9a53-6c1d3f0b7e21"

# every operation: its request model, and a valid body to break (names of the seeded objects)
OPERATIONS: dict[Op, tuple[type[BaseModel], dict[str, Any]]] = {
    Op.CREATE_WORK_POOL: (
        WorkPoolCreate,
        {
            "name": "new",
            "type": "process",
            "concurrency_limit": 2,
            "base_job_template": {},
            "storage_configuration": {},
        },
    ),
    Op.READ_WORK_POOL: (ReadWorkPool, {"name": "p"}),
    Op.READ_WORK_POOLS: (ReadWorkPools, {"work_pools": {"name": {"any_": ["p"]}}, "limit": 10, "offset": 0}),
    Op.COUNT_WORK_POOLS: (CountWorkPools, {"work_pools": {"name": {"any_": ["p"]}}}),
    Op.UPDATE_WORK_POOL: (UpdateWorkPool, {"name": "p", "work_pool": {"description": "d", "concurrency_limit": 3}}),
    Op.DELETE_WORK_POOL: (DeleteWorkPool, {"name": "p"}),
    Op.CREATE_WORK_QUEUE: (CreateWorkQueue, {"work_pool_name": "p", "work_queue": {"name": "q2", "priority": 2}}),
    Op.READ_WORK_QUEUE: (ReadWorkQueue, {"work_pool_name": "p", "name": "q"}),
    Op.READ_WORK_QUEUES: (ReadWorkQueues, {"work_pool_name": "p", "work_queues": {"name": {"any_": ["q"]}}}),
    Op.UPDATE_WORK_QUEUE: (UpdateWorkQueue, {"work_pool_name": "p", "name": "q", "work_queue": {"is_paused": True}}),
    Op.DELETE_WORK_QUEUE: (DeleteWorkQueue, {"work_pool_name": "p", "name": "q"}),
    Op.WORKER_HEARTBEAT: (WorkerHeartbeat, {"work_pool_name": "p", "name": "w", "heartbeat_interval_seconds": 30}),
    Op.READ_WORKERS: (ReadWorkers, {"work_pool_name": "p", "workers": {"status": {"any_": ["ONLINE"]}}, "limit": 5}),
    Op.DELETE_WORKER: (DeleteWorker, {"work_pool_name": "p", "name": "w"}),
    Op.CREATE_DEPLOYMENT: (DeploymentCreate, {"name": "d2", "work_pool_name": "p", "job_variables": {"a": 1}}),
    Op.READ_DEPLOYMENT: (ReadDeployment, {"deployment_id": SOME_ID}),
    Op.CREATE_FLOW_RUN: (FlowRunCreate, {"work_pool_name": "p", "name": "r2", "tags": ["t"], "parameters": {}}),
    Op.READ_FLOW_RUN: (ReadFlowRun, {"flow_run_id": SOME_ID}),
    Op.SET_FLOW_RUN_STATE: (SetFlowRunState, {"flow_run_id": SOME_ID, "state": {"type": "PENDING"}}),
    Op.GET_SCHEDULED_FLOW_RUNS: (
        GetScheduledFlowRuns,
        {"work_pool_name": "p", "work_queue_names": ["q"], "limit": 5, "claim": False},
    ),
    Op.READ_DEPLOYMENTS: (ReadDeployments, {"deployments": {"name": {"any_": ["d"]}}, "limit": 5}),
    Op.READ_FLOW_RUNS: (ReadFlowRuns, {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 5}),
    Op.PREVIEW_SCHEDULED_FLOW_RUNS: (
        PreviewScheduledFlowRuns,
        {"work_pool_name": "p", "work_queue_names": ["q"], "limit": 5},
    ),
}
assert set(OPERATIONS) == set(Op)


def accepted(op: Op, body: Any) -> bool:
    """Would the service take this body for `op` (then it is not hostile)?"""
    try:
        OPERATIONS[op][0].model_validate(body)
    except (ValidationError, ValueError, TypeError, RecursionError):
        return False
    return True


# --- strategies --------------------------------------------------------------------------------

ODD = [
    "\u202eevil",
    "a\u200db",
    "\ufeffbom",
    "👩\u200d👩\u200d👧\u200d👦",
    "e\u0301",
    "\U0010ffff",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "שלום",
    "مرحبا",
    "nul\x00mid",
    "\x00",
    "'; DROP TABLE work_pool; --",
    "%s%n%x",
    "{{ 7*7 }}",
    "../../etc/passwd",
    "",
    " ",
    "\n\t",
    "Prefect-reserved",
    "a/b",
    "<script>",
    "NaN",
    "null",
    "0x10",
]
odd_text = st.sampled_from(ODD) | st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
huge_text = st.sampled_from(["x", "é", "😀", "\u202e", "ab\u200d"]).map(lambda c: c * (100_000 // len(c))) | st.randoms(
    use_true_random=False
).map(lambda r: r.randbytes(50_000).hex())
huge_list = st.integers(1_000, 20_000).flatmap(lambda n: st.sampled_from([[0] * n, ["x"] * n, [None] * n, [{}] * n]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63)
    | st.integers(max_value=-(2**63))
    | st.floats(allow_nan=False, allow_infinity=False)
)
composite = st.lists(scalars | odd_text, max_size=4) | st.dictionaries(odd_text, scalars | odd_text, max_size=4)
hostile_value = scalars | odd_text | huge_text | huge_list | composite


def paths(body: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON body (its dicts, nested)."""
    found = []
    if isinstance(body, dict):
        for key, value in body.items():
            found.append((*prefix, key))
            found += paths(value, (*prefix, key))
    return found


def at(body: Any, path: tuple) -> Any:
    for key in path:
        body = body[key]
    return body


@st.composite
def broken(draw, op: Op) -> Any:
    """A body for `op` with one to three defects: a value of a wrong type (or hostile), a field
    missing, a field unknown — anywhere in the body, nested objects included."""
    body = json.loads(json.dumps(OPERATIONS[op][1]))
    for _ in range(draw(st.integers(1, 3))):
        defect, keys = draw(st.sampled_from(["replace", "drop", "add"])), paths(body)
        if defect == "add" or not keys:
            target = at(body, draw(st.sampled_from([(), *(p for p in keys if isinstance(at(body, p), dict))])))
            target[draw(odd_text.filter(lambda k, target=target: k not in target))] = draw(hostile_value)
        else:
            where = draw(st.sampled_from(keys))
            if defect == "drop":
                del at(body, where[:-1])[where[-1]]
            else:
                at(body, where[:-1])[where[-1]] = draw(hostile_value)
    if draw(st.integers(0, 5)) == 0:  # now and then a body that is not an object at all
        body = draw(st.sampled_from([[body], body.get("name"), 0, True, None, "body", []]))
    return body


# --- the service under test --------------------------------------------------------------------


@pytest.fixture
def settings(settings):
    """No foreman: nothing but the requests may change the database while the test watches it."""
    return settings.model_copy(update={"foreman_enabled": False, "heartbeat_flush_seconds": 0.05})


SNAPSHOT = text(
    " UNION ALL ".join(
        f"SELECT '{t.name}', count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM {t.name} r"
        for t in metadata.sorted_tables
    )
)


async def snapshot(db) -> list[tuple]:
    """Every table's row count and a hash of its rows."""
    async with db.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(SNAPSHOT)]


@pytest.fixture
async def seeded(client, db) -> list[tuple]:
    """A pool `p` (queue `q`, worker `w`, a deployment and a run): the objects hostile requests
    name; returns the database's snapshot once the seeding's events have left the outbox."""
    await client.create_work_pool({"name": "p", "type": "process"})
    await client.create_work_queue("p", {"name": "q"})
    await client.send_worker_heartbeat("p", "w", heartbeat_interval_seconds=30)
    deployment = await client.create_deployment({"name": "d", "work_pool_name": "p"})
    await client.create_flow_run({"deployment_id": str(deployment.id)})
    await wait_until(lambda: _outbox_empty(db), timeout=5)
    return await snapshot(db)


async def _outbox_empty(db) -> bool:
    async with db.engine.connect() as conn:
        return await conn.scalar(text("SELECT count(*) FROM event_outbox")) == 0


async def send(client, op: Op, data: bytes, *, binary: bool = False) -> tuple[int, Any]:
    """XADD raw request bytes for `op`; the reply's (status, body), or a failure after 5 s."""
    correlation_id = uuid.uuid4().hex
    reply = client._rpc.replies.expect(correlation_id)
    headers = {"correlation_id": correlation_id, "reply_to": client._rpc.reply_channel}
    if binary:  # FastStream's binary envelope carries any bytes, even ones that are not UTF-8
        message = await BinaryMessageFormatV1.encode(
            message=data, reply_to=client._rpc.reply_channel, headers={}, correlation_id=correlation_id
        )
    else:
        message = wire.encode_raw(data, headers)
    await client._rpc.redis.xadd(client._rpc.channels.rpc(op), {wire.DATA_FIELD: message})
    try:
        status, body, _ = await asyncio.wait_for(reply, 5)
    except TimeoutError:
        pytest.fail(f"no reply to {op} within 5 s for {data[:200]!r}")
    finally:
        client._rpc.replies.forget(correlation_id)
    return status, wire.parse_body(body)  # the reply channel leaves the body as JSON text


async def refused_and_nothing_changed(client, db, before, op: Op, data: bytes, **kwargs) -> None:
    status, reply = await send(client, op, data, **kwargs)
    assert 400 <= status < 500, (op, data[:300], status, reply)
    assert await client.count_work_pools() == 1  # still serving
    assert await snapshot(db) == before, (op, data[:300])


HYPOTHESIS = hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@HYPOTHESIS
@given(data=st.data(), op=st.sampled_from(list(Op)))
async def test_broken_bodies_for_every_operation_get_4xx_and_change_nothing(client, db, seeded, data, op):
    body = data.draw(broken(op))
    assume(not accepted(op, body))
    await refused_and_nothing_changed(client, db, seeded, op, json.dumps(body).encode())


@HYPOTHESIS
@given(data=st.data(), origin=st.sampled_from(list(Op)), target=st.sampled_from(list(Op)))
async def test_bodies_sent_to_another_operations_stream_get_4xx_and_change_nothing(
    client, db, seeded, data, origin, target
):
    assume(origin != target)
    body = OPERATIONS[origin][1] if data.draw(st.booleans()) else data.draw(broken(origin))
    assume(not accepted(target, body))
    await refused_and_nothing_changed(client, db, seeded, target, json.dumps(body).encode())


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


not_json = (
    st.text(min_size=1, max_size=200).filter(lambda t: not _parses(t)).map(str.encode)
    | st.sampled_from(
        [
            b"{",
            b"{{{",
            b'{"name": "p"',
            b"{'name': 'p'}",
            b"NaN",
            b"[1,]",
            b'{"a":1}{"b":2}',
            b'{"name": "\\ud800"}',
            b"1e999999",
            b'"\\u0000"',
            b"\xef\xbb\xbf[}",
        ]
    )
    | st.integers(1_000, 100_000).map(_deep)
    | st.integers(1_000, 100_000).map(lambda n: b'{"name":' * n)
)


def _parses(data: str) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


@HYPOTHESIS
@given(op=st.sampled_from(list(Op)), data=not_json)
async def test_bytes_that_are_not_json_get_4xx_and_change_nothing(client, db, seeded, op, data):
    await refused_and_nothing_changed(client, db, seeded, op, data)


@hypothesis_settings(HYPOTHESIS, max_examples=60)
@given(op=st.sampled_from(list(Op)), data=st.binary(min_size=1, max_size=300))
async def test_arbitrary_bytes_in_the_binary_envelope_get_4xx_and_change_nothing(client, db, seeded, op, data):
    assume(not accepted(op, _loads(data)))
    await refused_and_nothing_changed(client, db, seeded, op, data, binary=True)


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return data


async def test_a_request_over_the_size_limit_gets_422_with_the_size_message(client, db, seeded, settings):
    limit = settings.max_message_bytes
    body = json.dumps({"name": "big", "type": "process", "description": "x" * limit}).encode()
    status, reply = await send(client, Op.CREATE_WORK_POOL, body)
    assert (status, reply) == (422, {"detail": f"Request body is larger than {limit} bytes."})
    assert await snapshot(db) == seeded


async def test_filters_with_huge_lists_are_refused_not_answered_503(client, db, seeded):
    """More values than PostgreSQL takes in one statement is the request's fault (422): a 503
    would have the client retry it."""
    names = [f"name-{i}" for i in range(40_000)]
    for op, body in [
        (Op.READ_WORK_POOLS, {"work_pools": {"name": {"any_": names}}}),
        (Op.COUNT_WORK_POOLS, {"work_pools": {"type": {"any_": names}}}),
        (Op.READ_WORK_QUEUES, {"work_pool_name": "p", "work_queues": {"name": {"startswith_": names}}}),
    ]:
        status, reply = await client._rpc.request(op, body)
        assert (status, reply["detail"]) == (422, "Invalid value: the number of query arguments cannot exceed 32767")
    assert await client.count_work_pools({"name": {"any_": names[:1000] + ["p"]}}) == 1
    assert await snapshot(db) == seeded


async def test_names_longer_than_500_characters_are_refused_everywhere_a_name_is_given(client, db, seeded, worker):
    name, detail = "ü" * 501, "String should have at most 500 characters"
    for op, body, loc in [
        (Op.CREATE_WORK_POOL, {"name": name}, ["body", "name"]),
        (Op.CREATE_WORK_QUEUE, {"work_pool_name": "p", "work_queue": {"name": name}}, ["body", "work_queue", "name"]),
        (
            Op.UPDATE_WORK_QUEUE,
            {"work_pool_name": "p", "name": "q", "work_queue": {"name": name}},
            ["body", "work_queue", "name"],
        ),
        (Op.WORKER_HEARTBEAT, {"work_pool_name": "p", "name": name}, ["body", "name"]),
    ]:
        status, reply = await client._rpc.request(op, body)
        assert (status, reply["detail"][0]["loc"], reply["detail"][0]["msg"]) == (422, loc, detail), op
    worker.worker_name = name
    with pytest.raises(InvalidRequest):
        await worker.heartbeat(ack=True)
    assert await snapshot(db) == seeded
    assert (await client.create_work_pool({"name": "ü" * 500})).name == "ü" * 500


reserved_names = st.builds(str.__add__, st.sampled_from(["prefect", "Prefect", "PREFECT", "pReFeCt"]), odd_text)
ODD_NAMES = st.sampled_from(ODD) | odd_text | huge_text | reserved_names


@hypothesis_settings(HYPOTHESIS, max_examples=80)
@given(name=ODD_NAMES)
async def test_odd_names_are_stored_as_given_or_refused_never_a_server_error(client, db, seeded, name):
    """Names go to SQL as bound parameters: whatever a name holds it is stored and found as given,
    or refused with a 4xx (invalid, reserved, too long) — never a 5xx."""
    for op, body, read, read_body in [
        (Op.CREATE_WORK_POOL, {"name": name}, Op.READ_WORK_POOL, {"name": name}),
        (
            Op.CREATE_WORK_QUEUE,
            {"work_pool_name": "p", "work_queue": {"name": name}},
            Op.READ_WORK_QUEUE,
            {"work_pool_name": "p", "name": name},
        ),
        (Op.WORKER_HEARTBEAT, {"work_pool_name": "p", "name": name}, None, None),
    ]:
        status, reply = await client._rpc.request(op, body)
        assert status in (201, 204, 403, 409, 422), (op, name[:100], status, reply)
        if op == Op.CREATE_WORK_POOL and name.lower().startswith("prefect"):
            assert status in (403, 422), (name, status)  # reserved, unless invalid anyway
        if status == 201 and read is not None:
            found_status, found = await client._rpc.request(read, read_body)
            assert (found_status, found["name"]) == (200, name)
    assert await client.count_work_pools() >= 1


# --- the worker channel (pub/sub) ---------------------------------------------------------------

GOOD_BEAT = {"work_pool_name": "p", "worker_name": "w", "heartbeat_interval_seconds": 30}


@st.composite
def broken_beat(draw) -> bytes:
    body = dict(GOOD_BEAT, message_id=uuid.uuid4().hex)
    key = draw(st.sampled_from([*body, "extra"]))
    if draw(st.booleans()) and key in body:
        del body[key]
    else:
        body[key] = draw(hostile_value)
    return json.dumps(body).encode()


def _heartbeat(raw: bytes) -> bool:
    try:
        HeartbeatMessage.model_validate_json(raw)
    except ValidationError:
        return False
    return True


worker_garbage = (broken_beat() | not_json | st.binary(min_size=1, max_size=300)).filter(lambda b: not _heartbeat(b))


@pytest.fixture
async def worker(settings, service):
    async with WorkerClient(
        settings.redis_url,
        settings.prefix,
        work_pool_name="p",
        worker_name="w",
        heartbeat_interval_seconds=30,
        timeout=5,
    ) as worker:
        yield worker


@hypothesis_settings(HYPOTHESIS, max_examples=60)
@given(garbage=worker_garbage)
@example(garbage=json.dumps({"work_pool_name": "p", "worker_name": "x", "heartbeat_interval_seconds": 2**40}).encode())
@example(garbage=json.dumps({"work_pool_name": "p", "worker_name": uuid.uuid4().hex * 2000}).encode())
@example(garbage=_deep(5000))
async def test_garbage_on_the_heartbeat_channel_is_dropped_and_heartbeats_go_on(client, db, seeded, worker, garbage):
    """Whatever else is published on the heartbeat channel in the same batch, a worker's heartbeat
    is recorded and acknowledged, and no other worker appears."""
    await client._rpc.redis.publish(client._rpc.channels.worker_heartbeats, garbage)
    await worker.heartbeat(ack=True)
    [recorded] = await client.read_workers_for_work_pool("p")
    assert (recorded.name, recorded.heartbeat_interval_seconds) == ("w", 30)


# --- generated job-template schemas and nested data ----------------------------------------------


@hypothesis_settings(HYPOTHESIS, max_examples=40)
@given(variables=variables_schemas)
async def test_generated_job_template_schemas_get_201_or_422_at_once(client, db, seeded, variables):
    """Any schema — catastrophic patterns, remote and missing references, bad keywords — is
    answered at once with 201 (then the pool is removed again) or a 422 that says why."""
    name = f"gen-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "type": "process",
        "base_job_template": {"job_configuration": {"c": "1"}, "variables": variables},
    }
    started = asyncio.get_running_loop().time()
    status, reply = await send(client, Op.CREATE_WORK_POOL, json.dumps(body).encode())
    assert status in (201, 422), (status, reply, variables)
    assert asyncio.get_running_loop().time() - started < 3
    if status == 201:
        await client.delete_work_pool(name)
    else:
        assert reply["detail"], reply
    assert await client.count_work_pools() == 1


@hypothesis_settings(HYPOTHESIS, max_examples=40)
@given(value=nested_values, field=st.sampled_from(["parameters", "job_variables"]))
async def test_nested_data_at_any_depth_is_stored_or_refused_with_the_nesting_limit(client, db, seeded, value, field):
    body = {"work_pool_name": "p", field: {"v": value}}
    status, reply = await send(client, Op.CREATE_FLOW_RUN, json.dumps(body).encode())
    if json_too_deep(body) is None:
        assert status == 201, (status, reply)
        assert reply[field] == {"v": value}
    else:
        assert status == 422, (status, reply)
        assert [e["type"] for e in reply["detail"]] == ["json_too_deep"]
