"""Workers over Redis pub/sub: heartbeats and polls, plain JSON, one effect per message."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from sqlalchemy import select, text

from client import InvalidRequest, ObjectNotFound, ServiceUnavailable, WorkerClient, WorkPoolsError
from handlers.worker_channel import HeartbeatIngest, ReplyNamespace
from replica.app import build_app
from schemas.channels import Channels
from schemas.worker_channel import MESSAGE_LIFETIME_SECONDS
from services import scheduling
from services.tables import flow_run, request_log
from services.tables import worker as worker_table
from tests.chaos_proxy import ChaosProxy, Faults
from tests.factories import Clock, wait_until


def worker(settings, pool: str, name: str = "w1", **kwargs) -> WorkerClient:
    return WorkerClient(
        redis_url=settings.redis_url, prefix=settings.prefix, work_pool_name=pool, worker_name=name, **kwargs
    )


async def test_heartbeat_with_ack_records_the_worker(client, settings):
    await client.create_work_pool({"name": "hb", "type": "process"})
    async with worker(settings, "hb", heartbeat_interval_seconds=7) as w:
        await w.heartbeat(ack=True)
    [recorded] = await client.read_workers_for_work_pool("hb")
    assert (recorded.name, recorded.status, recorded.heartbeat_interval_seconds) == ("w1", "ONLINE", 7)
    assert (await client.read_work_pool("hb")).status == "READY"


async def test_fire_and_forget_heartbeats_are_recorded_within_two_seconds(client, settings):
    await client.create_work_pool({"name": "ff", "type": "process"})
    names = [f"w{i}" for i in range(200)]
    async with worker(settings, "ff") as w:
        for name in names:
            w.worker_name = name
            await w.heartbeat()
    recorded = await wait_until(lambda: _all_recorded(client, "ff", len(names)), timeout=2)
    assert sorted(r.name for r in recorded) == sorted(names)


async def _all_recorded(client, pool, count):
    workers = await client.read_workers_for_work_pool(pool)
    return workers if len(workers) == count else None


async def test_a_worker_client_connects_where_the_workpools_variables_say(client, settings, monkeypatch):
    monkeypatch.setenv("WORKPOOLS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("WORKPOOLS_PREFIX", settings.prefix)
    await client.create_work_pool({"name": "env", "type": "process"})
    async with WorkerClient(work_pool_name="env", worker_name="from-env") as w:
        assert (w.redis_url, w.prefix) == (settings.redis_url, settings.prefix)
        await w.heartbeat(ack=True)
    [recorded] = await client.read_workers_for_work_pool("env")
    assert (recorded.name, recorded.status) == ("from-env", "ONLINE")


def test_a_worker_client_without_settings_or_variables_uses_the_defaults(monkeypatch):
    monkeypatch.delenv("WORKPOOLS_REDIS_URL", raising=False)
    monkeypatch.delenv("WORKPOOLS_PREFIX", raising=False)
    w = WorkerClient(work_pool_name="p", worker_name="w")
    assert (w.redis_url, w.prefix, w.retries) == ("redis://localhost:6379/0", "workpools", 2)
    assert w.replies.channel.startswith("workpools.reply.")


async def test_a_claim_whose_answer_is_lost_is_asked_again_and_gets_the_same_batch_once(client, settings, db):
    """A proxy in front of Redis loses the first answer on its way to the worker, after the
    service leased the runs: WorkerClient asks again with the claim's request id and gets the
    batch the lost answer carried, with the same lease tokens; nothing else is leased."""
    await client.create_work_pool({"name": "lossy", "type": "process"})
    runs = [await client.create_flow_run({"work_pool_name": "lossy"}) for _ in range(3)]
    channels = Channels(settings.prefix)
    faults = Faults(
        heartbeats=channels.worker_heartbeats,
        polls=channels.worker_polls,
        sink=channels.probe,
        drop_first_poll_replies=1,
    )
    address = urlparse(settings.redis_url)
    async with ChaosProxy(address.hostname, address.port or 6379, faults) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}{address.path or '/0'}"
        async with WorkerClient(url, settings.prefix, work_pool_name="lossy", worker_name="w1", timeout=2) as w:
            started = time.monotonic()
            items = await w.get_scheduled_flow_runs(limit=2, claim=True)
            waited = time.monotonic() - started
    assert faults.counts["poll replies dropped"] == 1
    assert 2 <= waited < 10, waited  # one timeout (2 s), then the answer to the second message
    assert [item.flow_run.id for item in items] == [runs[0].id, runs[1].id]
    async with db.read() as tx:
        leased = (
            await tx.execute(
                select(flow_run.c.id, flow_run.c.lease_token, flow_run.c.lease_owner).where(
                    flow_run.c.lease_token.is_not(None)
                )
            )
        ).all()
        logged = (
            await tx.execute(select(request_log.c.op).where(request_log.c.request_id.like("worker-poll/lossy/%")))
        ).all()
    assert sorted((i.flow_run.id, i.lease.token, "w1") for i in items) == sorted(tuple(row) for row in leased)
    assert [tuple(row) for row in logged] == [("worker_poll",)]


async def test_unknown_pool_and_invalid_messages_are_answered(client, settings, redis):
    async with worker(settings, "missing") as w:
        with pytest.raises(ObjectNotFound) as raised:
            await w.heartbeat(ack=True)
        assert raised.value.detail == 'Work pool "missing" not found.'
        with pytest.raises(ObjectNotFound):
            await w.get_scheduled_flow_runs()
        with pytest.raises(InvalidRequest) as raised:
            await w._ask(Channels(settings.prefix).worker_polls, {"work_pool_name": 5})
        assert raised.value.detail[0]["loc"] == ["work_pool_name"]
    # the service keeps serving after garbage
    await redis.publish(Channels(settings.prefix).worker_polls, b"\xff not json")
    await redis.publish(Channels(settings.prefix).worker_heartbeats, b"[]")
    await client.create_work_pool({"name": "still", "type": "process"})
    async with worker(settings, "still") as w:
        await w.heartbeat(ack=True)


async def test_a_worker_in_any_language_can_poll_with_plain_json(client, settings, redis):
    await client.create_work_pool({"name": "plain", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "plain"})
    reply_channel = Channels(settings.prefix).worker_reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_channel)
    poll = {"correlation_id": "42", "reply_to": reply_channel, "work_pool_name": "plain", "limit": 5}
    await redis.publish(Channels(settings.prefix).worker_polls, json.dumps(poll))
    message = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=5)
    reply = json.loads(message["data"])
    await pubsub.aclose()
    assert (reply["correlation_id"], reply["status"]) == ("42", 200)
    assert [item["flow_run"]["id"] for item in reply["result"]] == [str(run.id)]


async def test_a_plain_json_error_reply_names_its_kind(client, settings, redis):
    reply_channel = Channels(settings.prefix).worker_reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_channel)
    poll = {"correlation_id": "43", "reply_to": reply_channel, "work_pool_name": "nowhere"}
    await redis.publish(Channels(settings.prefix).worker_polls, json.dumps(poll))
    message = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=5)
    await pubsub.aclose()
    reply = json.loads(message["data"])
    assert (reply["correlation_id"], reply["status"], reply["error"], reply["detail"]) == (
        "43",
        404,
        "not_found",
        'Work pool "nowhere" not found.',
    )


async def test_three_replicas_answer_each_poll_once_and_record_each_heartbeat_once(client, settings, redis, db):
    """The fixture's replica plus two more in this process: pub/sub reaches all three."""
    extra = [build_app(settings.model_copy(update={"consumer_name": f"extra-{i}"}), db=db) for i in range(2)]
    for app in extra:
        await app.start()
    try:
        await client.create_work_pool({"name": "trio", "type": "process"})
        run = await client.create_flow_run({"work_pool_name": "trio"})
        async with worker(settings, "trio") as w:
            results = await asyncio.gather(*(w.get_scheduled_flow_runs() for _ in range(40)))
            # every poll answered (overlapping polls may skip the run another one has locked)
            assert {str(item.flow_run.id) for r in results for item in r} == {str(run.id)}
            # one ready mark per poll, not one per replica
            await wait_until(lambda: _ready_marks(redis, settings.prefix, 40), timeout=5)
            channel = Channels(settings.prefix).worker_heartbeats
            await asyncio.gather(
                *(w._ask(channel, {"work_pool_name": "trio", "worker_name": f"beat-{i}"}) for i in range(60))
            )
        assert len(await client.read_workers_for_work_pool("trio")) == 60
        assert await redis.xlen(Channels(settings.prefix).ready) == 40
    finally:
        for app in extra:
            await app.stop()


async def _ready_marks(redis, prefix, count):
    return await redis.xlen(Channels(prefix).ready) >= count


async def test_repeated_heartbeats_of_one_worker_each_count(client, settings):
    await client.create_work_pool({"name": "rep", "type": "process"})
    async with worker(settings, "rep") as w:
        await w.heartbeat(ack=True)
        first = (await client.read_workers_for_work_pool("rep"))[0].last_heartbeat_time
        await w.heartbeat()  # fire-and-forget, same worker: a new message, not a duplicate
        later = await wait_until(lambda: _beat_after(client, "rep", first), timeout=2)
    assert later > first


async def _beat_after(client, pool, when):
    [recorded] = await client.read_workers_for_work_pool(pool)
    return recorded.last_heartbeat_time if recorded.last_heartbeat_time > when else None


async def test_odd_polls_are_answered(client, settings):
    await client.create_work_pool({"name": "odd", "type": "process"})
    async with worker(settings, "odd") as w:
        far = datetime(9999, 12, 31, tzinfo=UTC)
        assert await w.get_scheduled_flow_runs(scheduled_before=far, wait_seconds=0.3) == []
        with pytest.raises(InvalidRequest) as raised:
            await w._ask(
                Channels(settings.prefix).worker_polls,
                {"work_pool_name": "odd", "work_queue_names": [f"q{i}" for i in range(20_000)]},
            )
        assert raised.value.detail == "Message is larger than 65536 bytes."


# ----------------------------------------------------------------------------------------------
# One error path: every message that names a reply address gets an answer


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def depth_of(value) -> int:
    depth = 0
    while isinstance(value, dict):
        depth += 1
        value = next(iter(value.values()))
    return depth


class Replies:
    """A plain pub/sub reply channel, as a worker in any language would hold one."""

    def __init__(self, redis, prefix: str) -> None:
        self.redis, self.channel = redis, Channels(prefix).worker_reply(uuid.uuid4().hex)
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.received: dict[str, dict] = {}

    async def __aenter__(self) -> Replies:
        await self.pubsub.subscribe(self.channel)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.pubsub.aclose()

    async def answer(self, correlation_id: str, timeout: float = 5) -> dict:
        async def arrived():
            message = await self.pubsub.get_message(timeout=0.05)
            if message is not None:
                reply = json.loads(message["data"])
                self.received[reply["correlation_id"]] = reply
            return self.received.get(correlation_id)

        return await wait_until(arrived, timeout=timeout)


async def publish_poll(redis, prefix: str, replies: Replies, correlation_id: str, **fields) -> None:
    body = {"correlation_id": correlation_id, "reply_to": replies.channel, **fields}
    await redis.publish(Channels(prefix).worker_polls, json.dumps(body))


async def test_a_run_nested_252_levels_is_delivered_and_the_pool_keeps_flowing(client, settings, redis, db):
    """Its poll reply is deeper than pydantic's encoder goes: it is encoded by the standard
    library's encoder instead, with the run's parameters whole, and the runs behind it flow."""
    await client.create_work_pool({"name": "deep", "type": "process"})
    deep = await client.create_flow_run({"work_pool_name": "deep", "name": "deep"})
    async with db.engine.begin() as conn:  # stored as if an older service had accepted it
        await conn.execute(
            text("UPDATE flow_run SET parameters = CAST(:p AS jsonb) WHERE id = :id"),
            {"p": json.dumps(nested(252)), "id": deep.id},
        )
    others = [await client.create_flow_run({"work_pool_name": "deep"}) for _ in range(2)]
    async with Replies(redis, settings.prefix) as replies:
        await publish_poll(redis, settings.prefix, replies, "read", work_pool_name="deep", limit=10)
        reply = await replies.answer("read")
        assert reply["status"] == 200
        assert [item["flow_run"]["id"] for item in reply["result"]] == [str(deep.id), *(str(r.id) for r in others)]
        assert depth_of(reply["result"][0]["flow_run"]["parameters"]) == 252
    async with worker(settings, "deep", "claimer") as w:
        first = await w.get_scheduled_flow_runs(limit=1, claim=True)
        assert [item.flow_run.id for item in first] == [deep.id]
        assert depth_of(first[0].flow_run.parameters) == 252
        rest = await w.get_scheduled_flow_runs(limit=5, claim=True)
        assert [item.flow_run.id for item in rest] == [r.id for r in others]


async def test_an_unexpected_failure_of_a_poll_is_answered_500(client, settings, monkeypatch):
    await client.create_work_pool({"name": "boom", "type": "process"})

    async def broken(*args, **kwargs):
        raise RuntimeError("the poll broke")

    monkeypatch.setattr(scheduling, "get_scheduled_flow_runs", broken)
    async with worker(settings, "boom") as w:
        with pytest.raises(WorkPoolsError) as raised:
            await w.get_scheduled_flow_runs()
    assert (raised.value.status, raised.value.detail) == (500, "Internal Server Error")


# ----------------------------------------------------------------------------------------------
# Every message acts once, however late it arrives


async def test_a_claim_delivered_again_later_with_its_id_acts_once(client, settings, redis):
    await client.create_work_pool({"name": "late", "type": "process"})
    runs = [await client.create_flow_run({"work_pool_name": "late"}) for _ in range(2)]
    claim = {"work_pool_name": "late", "worker_name": "w1", "claim": True, "limit": 1, "message_id": "m-1"}
    async with Replies(redis, settings.prefix) as replies:
        await publish_poll(redis, settings.prefix, replies, "first", sent_at=time.time(), **claim)
        first = await replies.answer("first")
        assert [item["flow_run"]["id"] for item in first["result"]] == [str(runs[0].id)]
        # The same message (its id) arriving again: not answered, nothing claimed. A later
        # poll's answer shows the duplicate was passed over, not merely slow.
        await publish_poll(redis, settings.prefix, replies, "again", sent_at=time.time(), **claim)
        await publish_poll(redis, settings.prefix, replies, "probe", work_pool_name="late", limit=5)
        probe = await replies.answer("probe")
        assert [item["flow_run"]["id"] for item in probe["result"]] == [str(runs[1].id)]
        assert "again" not in replies.received


async def test_a_message_older_than_its_lifetime_is_refused_not_acted_on(client, settings, redis):
    await client.create_work_pool({"name": "old", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "old"})
    async with Replies(redis, settings.prefix) as replies:
        stale = time.time() - MESSAGE_LIFETIME_SECONDS - 5
        await publish_poll(
            redis, settings.prefix, replies, "old", work_pool_name="old", worker_name="w", claim=True, sent_at=stale
        )
        reply = await replies.answer("old")
        assert (reply["status"], reply["error"]) == (422, "invalid")
        assert reply["detail"].startswith("Message sent 35.") and reply["detail"].endswith("older than 30 s, refused.")
        beat = {
            "work_pool_name": "old",
            "worker_name": "late-beat",
            "sent_at": stale,
            "correlation_id": "beat",
            "reply_to": replies.channel,
        }
        await redis.publish(Channels(settings.prefix).worker_heartbeats, json.dumps(beat))
        assert (await replies.answer("beat"))["status"] == 422
    assert await client.read_workers_for_work_pool("old") == []
    assert (await client.read_flow_run(run.id)).state_type == "SCHEDULED"
    async with worker(settings, "old", "w") as w:
        [item] = await w.get_scheduled_flow_runs(claim=True)  # not leased by the refused claim
        assert item.flow_run.id == run.id


# ----------------------------------------------------------------------------------------------
# Heartbeats at scale: pool by pool, a bounded buffer


async def test_a_pool_row_held_elsewhere_stalls_only_its_own_workers_heartbeats(client, settings, db):
    await client.create_work_pool({"name": "held", "type": "process"})
    await client.create_work_pool({"name": "free", "type": "process"})
    async with db.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("SELECT id FROM work_pool WHERE name = 'held' FOR UPDATE"))
        async with worker(settings, "held", "stuck") as stuck, worker(settings, "free", "fine") as fine:
            stalled = asyncio.create_task(stuck.heartbeat(ack=True))
            await fine.heartbeat(ack=True)  # answered while the other pool's beat waits on its row
            assert [w.name for w in await client.read_workers_for_work_pool("free")] == ["fine"]
            assert await client.read_workers_for_work_pool("held") == []
            await transaction.rollback()
            try:
                await stalled  # recorded once the row is free, or 503 if it waited past the lock timeout
            except ServiceUnavailable as exc:
                assert exc.status == 503
                await stuck.heartbeat(ack=True)
    assert [w.name for w in await client.read_workers_for_work_pool("held")] == ["stuck"]


def test_a_full_heartbeat_buffer_sheds_new_beats_and_counts_them(caplog):
    database = SimpleNamespace(clock=Clock())  # all the ingest asks of it before a flush
    ingest = HeartbeatIngest(None, Channels("t"), database, None, max_buffer=3)  # type: ignore[arg-type]
    for i in range(5):
        ingest.received(json.dumps({"work_pool_name": "p", "worker_name": f"w{i}"}).encode())
    assert (len(ingest._buffer), ingest.shed) == (3, 2)
    assert "heartbeat buffer full (3): 1 heartbeats shed so far" in caplog.text


# ----------------------------------------------------------------------------------------------
# Answers only inside the reply namespace of the channel a message came in on


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused to answer a ")]


async def test_a_poll_naming_a_channel_outside_the_namespace_gets_no_answer_and_leases_nothing(
    client, settings, redis, db, caplog
):
    caplog.set_level(logging.WARNING, logger="workpools.workers")
    await client.create_work_pool({"name": "astray", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "astray"})
    channels = Channels(settings.prefix)
    outside = [
        "elsewhere.inbox",
        Channels(settings.prefix + "x").worker_reply("victim"),
        channels.wake,
        channels.replies,
    ]
    watcher = redis.pubsub(ignore_subscribe_messages=True)
    await watcher.subscribe(*outside)
    async with Replies(redis, settings.prefix) as replies:
        for i, reply_to in enumerate(outside):
            claim = {"work_pool_name": "astray", "worker_name": "astray-w", "claim": True, "limit": 5}
            body = {"correlation_id": f"astray-{i}", "reply_to": reply_to, **claim}
            await redis.publish(channels.worker_polls, json.dumps(body))
        beat = {"work_pool_name": "astray", "worker_name": "beat", "correlation_id": "hb", "reply_to": outside[0]}
        await redis.publish(channels.worker_heartbeats, json.dumps(beat))
        await wait_until(lambda: len(refusals(caplog)) == 5 or None, timeout=5)
        # the heartbeat is recorded as a fire-and-forget one; the claims leased nothing
        await wait_until(lambda: _all_recorded(client, "astray", 1), timeout=5)
        await publish_poll(redis, settings.prefix, replies, "probe", work_pool_name="astray", limit=5)
        probe = await replies.answer("probe")
    assert [(item["flow_run"]["id"], item["lease"]) for item in probe["result"]] == [(str(run.id), None)]
    assert await watcher.get_message(timeout=0.5) is None  # nothing published outside
    await watcher.aclose()
    async with db.read() as tx:
        leased = (await tx.execute(select(flow_run.c.id).where(flow_run.c.lease_token.is_not(None)))).all()
        workers = (await tx.execute(select(worker_table.c.name))).scalars().all()
    assert (leased, sorted(workers)) == ([], ["beat"])  # the refused polls did not even count as polls
    lines = refusals(caplog)
    assert sorted(line.split(" on ")[0] for line in lines) == ["refused to answer a heartbeat"] + 4 * [
        "refused to answer a poll"
    ]
    namespace = f"outside {channels.replies}.* or {channels.worker_reply('')}*"
    assert sum(f"on 'elsewhere.inbox': {namespace}, the reply namespace of the shared" in line for line in lines) == 2
    assert sum("(not acted on, no answer)" in line for line in lines) == 4
    assert sum("(recorded, no answer)" in line for line in lines) == 1


async def test_a_message_on_a_users_worker_channel_is_answered_only_in_that_users_namespace(
    client, settings, redis, caplog
):
    """The service knows whose message it is from the channel (only that Redis user may publish
    there): bob's poll is answered on bob's reply channel, never on alice's."""
    caplog.set_level(logging.WARNING, logger="workpools.workers")
    await client.create_work_pool({"name": "users", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "users"})
    channels = Channels(settings.prefix)
    alice, bob = channels.reply("a1", user="alice"), channels.worker_reply("b1", user="bob")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(alice, bob)
    for correlation_id, reply_to in (("at-alice", alice), ("at-bob", bob)):
        body = {"correlation_id": correlation_id, "reply_to": reply_to, "work_pool_name": "users", "limit": 5}
        await redis.publish(channels.worker_polls_of("bob"), json.dumps(body))
    message = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=5)
    assert await pubsub.get_message(timeout=0.5) is None
    await pubsub.aclose()
    reply = json.loads(message["data"])
    assert (message["channel"].decode(), reply["correlation_id"], reply["status"]) == (bob, "at-bob", 200)
    assert [item["flow_run"]["id"] for item in reply["result"]] == [str(run.id)]
    [line] = refusals(caplog)
    assert f"on {alice!r}: outside {channels.replies}.bob.* or {channels.worker_reply('', user='bob')}*" in line
    assert "the reply namespace of Redis user 'bob'" in line


async def test_worker_clients_publish_on_their_users_channels(settings):
    channels = Channels(settings.prefix)
    for url, user in (("redis://alice:pw@localhost:6379/0", "alice"), ("redis://localhost:6379/0", None)):
        w = WorkerClient(url, settings.prefix, work_pool_name="p", worker_name="w")
        assert (w.heartbeat_channel, w.poll_channel) == (
            channels.worker_heartbeats_of(user),
            channels.worker_polls_of(user),
        )
        assert channels.answers_worker_on(w.replies.channel, user)
    assert channels.worker_polls_of("alice") == channels.worker_polls + ".alice"
    assert channels.worker_channel_user(channels.worker_polls_of("alice")) == "alice"
    assert channels.worker_channel_user(channels.worker_heartbeats) is None


def test_refused_answers_are_counted():
    namespace = ReplyNamespace(Channels("t"))
    allowed = [
        namespace.allows("poll", reply_to, user, "not acted on")
        for reply_to, user in [
            ("t.reply.x", None),
            ("t.workers.reply.x", None),
            ("t.reply.bob.x", "bob"),
            ("t.reply.alice.x", "bob"),
            ("t.reply.x", "bob"),
            ("u.reply.x", None),
            ("t.replyx", None),
        ]
    ]
    assert (allowed, namespace.refused) == ([True, True, True, False, False, False, False], 4)
