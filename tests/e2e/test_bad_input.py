"""Bad requests get a 422 reply at once (never a timeout) and the service keeps serving;
the client refuses bad payloads itself with `InvalidRequest` (docs/errors.md: every request gets an answer)."""

import asyncio
import json
from uuid import uuid4

import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1

from client import InvalidRequest
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until

# op -> bodies that are wrong: a field of the wrong type, a required field missing, an unknown field
BAD_BODIES = {
    Op.CREATE_WORK_POOL: [{"name": 1}, {"type": "process"}, {"name": "x", "bogus": 1}],
    Op.READ_WORK_POOL: [{"name": ["x"]}, {}, {"name": "x", "bogus": 1}],
    Op.READ_WORK_POOLS: [{"limit": "many"}, {"work_pools": {"name": {"any_": "x"}}}, {"bogus": 1}],
    Op.COUNT_WORK_POOLS: [{"work_pools": 5}, {"work_pools": {"operator": "xor"}}, {"bogus": 1}],
    Op.UPDATE_WORK_POOL: [{"name": "x", "work_pool": []}, {"name": "x"}, {"name": "x", "work_pool": {"bogus": 1}}],
    Op.DELETE_WORK_POOL: [{"name": None}, {}, {"name": "x", "bogus": 1}],
    Op.CREATE_WORK_QUEUE: [
        {"work_pool_name": "x", "work_queue": {"name": "q", "priority": "high"}},
        {"work_pool_name": "x"},
        {"work_pool_name": "x", "work_queue": {"name": "q"}, "bogus": 1},
    ],
    Op.READ_WORK_QUEUE: [
        {"work_pool_name": 1, "name": "q"},
        {"work_pool_name": "x"},
        {"work_pool_name": "x", "name": "q", "bogus": 1},
    ],
    Op.READ_WORK_QUEUES: [{"work_pool_name": "x", "offset": "0x"}, {}, {"work_pool_name": "x", "bogus": 1}],
    Op.UPDATE_WORK_QUEUE: [
        {"work_pool_name": "x", "name": "q", "work_queue": {"is_paused": "maybe"}},
        {"work_pool_name": "x", "name": "q"},
        {"work_pool_name": "x", "name": "q", "work_queue": {"bogus": 1}},
    ],
    Op.DELETE_WORK_QUEUE: [
        {"work_pool_name": "x", "name": {}},
        {"name": "q"},
        {"work_pool_name": "x", "name": "q", "bogus": 1},
    ],
    Op.WORKER_HEARTBEAT: [
        {"work_pool_name": "x", "name": "w", "heartbeat_interval_seconds": "soon"},
        {"work_pool_name": "x"},
        {"work_pool_name": "x", "name": "w", "bogus": 1},
    ],
    Op.READ_WORKERS: [
        {"work_pool_name": "x", "workers": {"status": {"any_": ["ASLEEP"]}}},
        {"workers": None},
        {"work_pool_name": "x", "bogus": 1},
    ],
    Op.DELETE_WORKER: [
        {"work_pool_name": "x", "name": 3.5},
        {"work_pool_name": "x"},
        {"work_pool_name": "x", "name": "w", "bogus": 1},
    ],
}
NOT_OBJECTS = [b"\x00not json{", b"[1, 2]", b'"a string"', b"42", b"null", b""]


class Binary(bytes):
    """A body sent in FastStream's binary envelope, which (unlike JSON) carries any bytes."""


async def _replies(redis, prefix: str, requests: list[tuple[Op, bytes]]) -> dict[str, tuple[int, object]]:
    """Send raw request bodies, each in its own envelope, and collect the replies by correlation id
    (the index of the request)."""
    reply_to = Channels(prefix).reply(uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_to)
    replies: dict[str, tuple[int, object]] = {}
    try:
        for index, (op, data) in enumerate(requests):
            if isinstance(data, Binary):
                message = await BinaryMessageFormatV1.encode(
                    message=bytes(data), reply_to=reply_to, headers={}, correlation_id=str(index)
                )
            else:
                message = wire.encode_raw(data, {"correlation_id": str(index), "reply_to": reply_to})
            await redis.xadd(Channels(prefix).rpc(op), {wire.DATA_FIELD: message})

        async def collect() -> bool:
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                body, headers = wire.decode(message["data"])
                replies[headers["correlation_id"]] = (int(headers["status"]), body)
            return len(replies) == len(requests)

        await wait_until(collect, timeout=5)
    finally:
        await pubsub.aclose()
    return replies


async def test_bad_bodies_get_422_at_once_for_every_op(client, redis, prefix):
    requests = [(op, json.dumps(body).encode()) for op, bodies in BAD_BODIES.items() for body in bodies]

    replies = await _replies(redis, prefix, requests)

    for index, (op, data) in enumerate(requests):
        status, body = replies[str(index)]
        assert status == 422, (op, data, body)
        assert body["detail"][0]["loc"][0] == "body"
        kind = index % 3  # wrong type, missing, unknown
        if kind == 2:
            assert [e["type"] for e in body["detail"]] == ["extra_forbidden"]
        elif kind == 1 and op not in (Op.READ_WORK_POOLS, Op.COUNT_WORK_POOLS):
            assert {e["type"] for e in body["detail"]} == {"missing"}
    assert (await client.create_work_pool(make_pool(name="still-serving"))).name == "still-serving"


async def test_bodies_that_are_not_objects_get_422_for_every_op(client, redis, prefix):
    ops = [op for op in BAD_BODIES if op not in (Op.READ_WORK_POOLS, Op.COUNT_WORK_POOLS)]
    requests = [(op, data) for op in ops for data in NOT_OBJECTS]

    replies = await _replies(redis, prefix, requests)

    for index, (op, data) in enumerate(requests):
        status, body = replies[str(index)]
        assert status == 422, (op, data, body)
        assert [(e["type"], e["loc"]) for e in body["detail"]] == [("model_type", ["body"])]
    assert await client.count_work_pools() == 0


async def test_filter_ops_take_an_absent_body_but_not_a_wrong_one(client, redis, prefix):
    await client.create_work_pool(make_pool(name="p"))
    requests = [(op, data) for op in (Op.READ_WORK_POOLS, Op.COUNT_WORK_POOLS) for data in NOT_OBJECTS]

    replies = await _replies(redis, prefix, requests)

    statuses = [replies[str(i)][0] for i in range(len(requests))]
    assert statuses == [422, 422, 422, 422, 200, 200] * 2
    assert replies["4"][1][0]["name"] == "p"
    assert replies["11"][1] == 1


async def test_undecodable_bytes_get_422(client, redis, prefix):
    requests = [(Op.CREATE_WORK_POOL, Binary(b"\xff\xfe\x00")), (Op.WORKER_HEARTBEAT, Binary(b'{"name": "\xff"}'))]

    replies = await _replies(redis, prefix, requests)

    for index in ("0", "1"):
        status, body = replies[index]
        assert status == 422
        assert body["detail"] == [
            {  # the input JSON cannot carry is left out of the report
                "type": "model_type",
                "loc": ["body"],
                "msg": body["detail"][0]["msg"],
                "ctx": body["detail"][0]["ctx"],
            }
        ]
        assert body["detail"][0]["msg"].startswith("Input should be a valid dictionary or instance of ")
    assert (await client.create_work_pool(make_pool(name="after"))).name == "after"


async def test_many_bad_requests_then_good_ones(client, redis, prefix):
    requests = [(Op.CREATE_WORK_POOL, b"{{{") for _ in range(50)]
    replies = await _replies(redis, prefix, requests)
    assert {status for status, _ in replies.values()} == {422}

    created = await asyncio.gather(*(client.create_work_pool(make_pool()) for _ in range(10)))
    assert await client.count_work_pools() == len({p.id for p in created}) == 10


BAD_PAYLOADS = [
    ("create_work_pool", ({"name": 1},)),
    ("create_work_pool", ({"name": b"\xff"},)),
    (
        "create_work_pool",
        ({"name": "x", "base_job_template": {"job_configuration": {"a": object()}, "variables": {"properties": {}}}},),
    ),
    ("create_work_pool", ({"name": "x", "base_job_template": {"variables": {}}},)),
    ("create_work_pool", ([("name", "x")],)),
    ("update_work_pool", ("p", {"bogus": 1})),
    ("update_work_pool", ("p", {"description": b"\xfe"})),
    ("read_work_pools", (None, 0, {"name": {"any_": "x"}})),
    ("count_work_pools", ({"operator": "xor"},)),
    ("create_work_queue", ("p", {"name": "q", "priority": 0})),
    ("update_work_queue", ("p", "q", {"name": "a/b"})),
    ("read_work_queues", ("p", {"name": {"startswith_": 5}})),
    ("read_workers_for_work_pool", ("p", {"status": {"any_": ["ASLEEP"]}})),
]


async def test_client_refuses_bad_payloads_before_sending(client, redis, prefix):
    for method, args in BAD_PAYLOADS:
        with pytest.raises(InvalidRequest) as info:
            await getattr(client, method)(*args)
        assert info.value.status == 422, method
        assert not isinstance(info.value, ValueError)
        assert json.dumps(info.value.detail)  # JSON data, whatever the input was
    streams = [key async for key in redis.scan_iter(match=Channels(prefix).rpc("*"))]
    assert len(streams) >= len(BAD_BODIES)
    assert [await redis.xlen(stream) for stream in streams] == [0] * len(streams)


async def test_values_postgres_cannot_store_are_422_not_500(client):
    await client.create_work_pool(make_pool(name="p"))
    too_big = 2**31
    for op, body, loc in [
        (Op.CREATE_WORK_POOL, {"name": "x", "concurrency_limit": too_big}, ["body", "concurrency_limit"]),
        (
            Op.UPDATE_WORK_POOL,
            {"name": "p", "work_pool": {"concurrency_limit": too_big}},
            ["body", "work_pool", "concurrency_limit"],
        ),
        (
            Op.CREATE_WORK_QUEUE,
            {"work_pool_name": "p", "work_queue": {"name": "q", "priority": too_big}},
            ["body", "work_queue", "priority"],
        ),
        (
            Op.WORKER_HEARTBEAT,
            {"work_pool_name": "p", "name": "w", "heartbeat_interval_seconds": too_big},
            ["body", "heartbeat_interval_seconds"],
        ),
        (
            Op.WORKER_HEARTBEAT,
            {"work_pool_name": "p", "name": "w", "heartbeat_interval_seconds": -too_big - 1},
            ["body", "heartbeat_interval_seconds"],
        ),
        (Op.READ_WORK_POOLS, {"offset": 2**70}, ["body", "offset"]),
        (Op.CREATE_WORK_POOL, {"name": "a\x00b"}, ["body", "name"]),
        (Op.READ_WORK_POOL, {"name": "\x00"}, ["body", "name"]),
        (Op.CREATE_WORK_POOL, {"name": "x", "description": "\x00"}, ["body", "description"]),
        (
            Op.CREATE_WORK_POOL,
            {"name": "x", "base_job_template": {"job_configuration": {"a": ["\x00"]}, "variables": {"x": 1}}},
            ["body", "base_job_template"],
        ),
        (
            Op.CREATE_WORK_QUEUE,
            {"work_pool_name": "p", "work_queue": {"name": "q", "filter": {"tags": ["\x00"]}}},
            ["body", "work_queue", "filter", "tags"],
        ),
        (Op.WORKER_HEARTBEAT, {"work_pool_name": "p", "name": "w\x00"}, ["body", "name"]),
    ]:
        status, reply = await client._rpc.request(op, body)
        assert (status, [e["loc"] for e in reply["detail"]]) == (422, [loc]), (op, body, reply)

    await client.send_worker_heartbeat("p", "w", heartbeat_interval_seconds=2**31 - 1)
    [worker] = await client.read_workers_for_work_pool("p")
    assert worker.heartbeat_interval_seconds == 2**31 - 1
    assert await client.count_work_pools() == 1
