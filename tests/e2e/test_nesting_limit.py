"""One nesting limit (`MAX_JSON_DEPTH`, 64 levels counting the body itself) for every JSON field
on every path, checked where the message enters: at the limit accepted, one level over a 422 that
says so — over the request streams and over the worker channel."""

from __future__ import annotations

import json
import uuid

from schemas import wire
from schemas.channels import Channels, Op
from schemas.common import MAX_JSON_DEPTH
from tests.factories import make_pool, wait_until

OVER = f"JSON nests deeper than {MAX_JSON_DEPTH} levels"


def nest(levels: int) -> dict:
    """An object nesting `levels` levels (itself included)."""
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[return-value]


async def _ask(redis, prefix: str, op: Op, body: dict | bytes) -> tuple[int, object]:
    """One raw request (past the client's own validation) and its reply."""
    reply_to = Channels(prefix).reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_to)
    try:
        headers = {"correlation_id": "1", "reply_to": reply_to}
        message = wire.encode_raw(body, headers) if isinstance(body, bytes) else wire.encode(body, headers)
        await redis.xadd(Channels(prefix).rpc(op), {wire.DATA_FIELD: message})
        received = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=10)
    finally:
        await pubsub.aclose()
    reply, headers = wire.decode(received["data"])
    return int(headers["status"]), reply


async def _publish(redis, channel: str, message: dict) -> dict:
    reply_to = message["reply_to"]
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_to)
    try:
        await redis.publish(channel, json.dumps(message))
        received = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=10)
    finally:
        await pubsub.aclose()
    return json.loads(received["data"])


def _over(reply: object) -> str:
    [error] = reply["detail"]  # type: ignore[index]
    assert (error["type"], error["loc"]) == ("json_too_deep", ["body"])
    return error["msg"]


async def test_every_json_field_of_the_stream_requests_at_and_over_the_limit(client, redis, prefix):
    pool = await client.create_work_pool(make_pool())
    deployment = await client.create_deployment({"name": "d", "work_pool_name": pool.name})
    # the body is level 1, the field level 2: the field may nest MAX_JSON_DEPTH - 1 levels
    run_at_limit = {"deployment_id": str(deployment.id), "parameters": nest(MAX_JSON_DEPTH - 1)}
    status, run = await _ask(redis, prefix, Op.CREATE_FLOW_RUN, run_at_limit)
    assert status == 201 and run["parameters"] == nest(MAX_JSON_DEPTH - 1)
    status, reply = await _ask(redis, prefix, Op.CREATE_FLOW_RUN, {**run_at_limit, "parameters": nest(MAX_JSON_DEPTH)})
    assert status == 422
    assert _over(reply) == OVER + " (at parameters" + "/a" * (MAX_JSON_DEPTH - 1) + ")"

    deployment_at_limit = {"name": "deep", "work_pool_name": pool.name, "job_variables": nest(MAX_JSON_DEPTH - 1)}
    status, created = await _ask(redis, prefix, Op.CREATE_DEPLOYMENT, deployment_at_limit)
    assert status == 201 and created["job_variables"] == nest(MAX_JSON_DEPTH - 1)
    over = {**deployment_at_limit, "name": "deeper", "job_variables": nest(MAX_JSON_DEPTH)}
    status, reply = await _ask(redis, prefix, Op.CREATE_DEPLOYMENT, over)
    assert status == 422 and _over(reply).startswith(OVER + " (at job_variables/a/")

    def template(levels: int) -> dict:  # job_configuration is level 3 of the body
        return {"job_configuration": {"x": nest(levels - 3)}, "variables": {"properties": {}}}

    status, created = await _ask(redis, prefix, Op.CREATE_WORK_POOL, make_pool(base_job_template=template(64)))
    assert status == 201 and created["base_job_template"] == template(64)
    status, reply = await _ask(redis, prefix, Op.CREATE_WORK_POOL, make_pool(base_job_template=template(65)))
    assert status == 422 and _over(reply).startswith(OVER + " (at base_job_template/job_configuration/x/a/")
    # an update nests one level more (work_pool), so its template one level less
    update = {"name": pool.name, "work_pool": {"base_job_template": template(65)}}
    status, reply = await _ask(redis, prefix, Op.UPDATE_WORK_POOL, update)
    assert status == 422 and _over(reply).startswith(OVER + " (at work_pool/base_job_template/")
    # far deeper: still a 422 at once, whether Python's JSON parser can read it or not
    for levels in (900, 5_000):
        raw = b'{"parameters":' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
        status, reply = await _ask(redis, prefix, Op.CREATE_FLOW_RUN, raw)
        assert status == 422, levels
        if levels == 900:
            assert _over(reply).startswith(OVER + " (at parameters/a/a/")
        else:
            assert reply == {"detail": f"Request body nests deeper than {MAX_JSON_DEPTH} levels."}
    assert await client.count_work_pools() == 2


async def test_worker_channel_messages_at_and_over_the_limit(client, redis, prefix):
    pool = await client.create_work_pool(make_pool())
    deep_run = await client.create_flow_run({"work_pool_name": pool.name, "parameters": nest(MAX_JSON_DEPTH - 1)})
    reply_to = Channels(prefix).worker_reply(uuid.uuid4().hex)
    poll = {"correlation_id": "p", "reply_to": reply_to, "work_pool_name": pool.name}

    # a run whose parameters are at the limit is handed out (its reply serialises)
    reply = await _publish(redis, Channels(prefix).worker_polls, poll)
    assert reply["status"] == 200
    assert [item["flow_run"]["id"] for item in reply["result"]] == [str(deep_run.id)]
    assert reply["result"][0]["flow_run"]["parameters"] == nest(MAX_JSON_DEPTH - 1)

    # at the limit: an ordinary validation error (no such field); over it: the nesting limit
    reply = await _publish(redis, Channels(prefix).worker_polls, {**poll, "correlation_id": "q", "x": nest(63)})
    assert (reply["status"], [e["type"] for e in reply["detail"]]) == (422, ["extra_forbidden"])
    reply = await _publish(redis, Channels(prefix).worker_polls, {**poll, "correlation_id": "r", "x": nest(64)})
    assert reply["status"] == 422
    assert [(e["type"], e["msg"]) for e in reply["detail"]] == [("json_too_deep", OVER + " (at x" + "/a" * 63 + ")")]

    heartbeat = {"work_pool_name": pool.name, "worker_name": "w", "correlation_id": "h", "reply_to": reply_to}
    reply = await _publish(redis, Channels(prefix).worker_heartbeats, {**heartbeat, "x": nest(63)})
    assert (reply["status"], [e["type"] for e in reply["detail"]]) == (422, ["extra_forbidden"])
    reply = await _publish(
        redis, Channels(prefix).worker_heartbeats, {**heartbeat, "correlation_id": "i", "x": nest(64)}
    )
    assert reply["status"] == 422
    assert [(e["type"], e["msg"]) for e in reply["detail"]] == [("json_too_deep", OVER + " (at x" + "/a" * 63 + ")")]
    reply = await _publish(redis, Channels(prefix).worker_heartbeats, {**heartbeat, "correlation_id": "j"})
    assert reply["status"] == 204
