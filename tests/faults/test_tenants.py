"""Tenants kept apart, with real Redis ACL users as the README defines them: each client answers
in its own reply namespace; client B can read neither client A's requests nor A's replies and
cannot publish on A's reply channel (no forged reply); the service publishes nowhere outside its
own namespace, whatever a request's `reply_to` says."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from client import WorkerClient, WorkPoolClient
from replica.app import build_app
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until
from tests.faults.test_redis_acl import create_user, readme_acl

pytestmark = pytest.mark.faults


def client_acl(user: str, prefix: str, password: str) -> list[str]:
    """The README's client line, for user `user` (its name stands in the line twice)."""
    return [part.replace("workpools-client", user) for part in readme_acl("workpools-client", prefix, password)]


async def test_client_b_can_neither_read_nor_forge_client_a_traffic(settings, db, fault_redis, caplog):
    prefix, channels = settings.prefix, Channels(settings.prefix)
    passwords = {user: f"{user}-{uuid.uuid4().hex[:12]}" for user in ("workpools", "alice", "bob")}
    create_user(fault_redis, readme_acl("workpools", prefix, passwords["workpools"]))
    for user in ("alice", "bob"):
        create_user(fault_redis, client_acl(user, prefix, passwords[user]))
    url = {user: fault_redis.url(user, password) for user, password in passwords.items()}
    admin = fault_redis.client()
    admin.execute_command("ACL", "LOG", "RESET")
    caplog.set_level(logging.WARNING, logger="workpools.requests")
    caplog.set_level(logging.WARNING, logger="workpools.workers")

    service = settings.model_copy(update={"redis_url": url["workpools"]})
    bob_redis = Redis.from_url(url["bob"])
    async with (
        build_app(service, db=db),
        WorkPoolClient(url["alice"], prefix, timeout=10) as alice,
        WorkerClient(url["alice"], prefix, work_pool_name="tenant", worker_name="wa", timeout=10) as alice_worker,
        WorkPoolClient(url["bob"], prefix, timeout=10) as bob,
        WorkerClient(url["bob"], prefix, work_pool_name="tenant", worker_name="wb", timeout=10) as bob_worker,
    ):
        assert alice._rpc.reply_channel.startswith(channels.reply("", user="alice"))
        assert alice_worker.replies.channel.startswith(channels.reply("", user="alice"))
        await alice.create_work_pool(make_pool(name="tenant"))
        run = await alice.create_flow_run({"work_pool_name": "tenant", "parameters": {"secret": "s3cr3t"}})
        await alice_worker.heartbeat(ack=True)
        [polled] = await alice_worker.get_scheduled_flow_runs(limit=1)
        assert polled.flow_run.id == run.id
        assert await bob.count_work_pools() == 1  # bob is served, in his own namespace

        # B cannot read A's requests (parameters, reply addresses): request streams are write-only
        stream = channels.rpc(Op.CREATE_FLOW_RUN)
        for read in (lambda: bob_redis.xrange(stream), lambda: bob_redis.xread({stream: "0"})):
            with pytest.raises(NoPermissionError):
                await read()
        # nor subscribe to A's replies
        pubsub = bob_redis.pubsub()
        with pytest.raises(NoPermissionError):
            await pubsub.subscribe(alice._rpc.reply_channel)
            await pubsub.get_message(timeout=1.0)
        await pubsub.aclose()
        # nor forge one: a fake ACCEPT on A's reply channel is refused by Redis
        forged = wire.encode({"status": "ACCEPT"}, {"correlation_id": "x", "status": "201"})
        for channel in (alice._rpc.reply_channel, alice_worker.replies.channel):
            with pytest.raises(NoPermissionError):
                await bob_redis.publish(channel, forged)

        # the worker channel: bob can neither see alice's worker messages nor publish as her,
        # and his own poll naming alice's reply channel and her correlation id is not answered
        # there (nor acted on): the service answers bob only in bob's namespace
        assert alice_worker.poll_channel == channels.worker_polls_of("alice")
        pubsub = bob_redis.pubsub()
        with pytest.raises(NoPermissionError):
            await pubsub.subscribe(channels.worker_polls_of("alice"))
            await pubsub.get_message(timeout=1.0)
        await pubsub.aclose()
        for channel in (channels.worker_polls, channels.worker_polls_of("alice"), channels.worker_heartbeats):
            with pytest.raises(NoPermissionError):
                await bob_redis.publish(channel, b"{}")
        watch = admin.pubsub(ignore_subscribe_messages=True)
        watch.subscribe(alice_worker.replies.channel)
        second = await alice.create_flow_run({"work_pool_name": "tenant"})
        forged = {
            "work_pool_name": "tenant",
            "worker_name": "wa",
            "claim": True,
            "reply_to": alice_worker.replies.channel,
        }
        await bob_redis.publish(channels.worker_polls_of("bob"), json.dumps({**forged, "correlation_id": "c-1"}))
        beat = {"work_pool_name": "tenant", "worker_name": "wb", "correlation_id": "c-2"}
        await bob_redis.publish(
            channels.worker_heartbeats_of("bob"), json.dumps({**beat, "reply_to": alice_worker.replies.channel})
        )
        await wait_until(lambda: len(_worker_refusals(caplog)) == 2, timeout=10)
        bobs = await bob_worker.get_scheduled_flow_runs(claim=True)  # answered to bob, on his channel
        # both runs: the forged claim leased none of them
        assert sorted((str(i.flow_run.id), i.lease.owner) for i in bobs) == sorted(
            [(str(run.id), "wb"), (str(second.id), "wb")]
        )
        assert watch.get_message(timeout=0.5) is None
        watch.close()

        # the service answers nowhere outside its namespace, whatever reply_to a request names
        outside = admin.pubsub(ignore_subscribe_messages=True)
        targets = ["elsewhere.inbox", Channels(prefix + "x").reply("victim"), channels.wake, channels.worker_polls]
        outside.subscribe(*targets)
        for correlation_id, reply_to in enumerate(targets):
            request = wire.encode({}, {"correlation_id": str(correlation_id), "reply_to": reply_to})
            admin.xadd(channels.rpc(Op.COUNT_WORK_POOLS), {wire.DATA_FIELD: request})
        assert await alice.count_work_pools() == 1  # the same stream: served after those
        assert outside.get_message(timeout=0.5) is None
        outside.close()

    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused request")]
    assert len(refused) == 4 and all(f"is outside {channels.replies}.*" in line for line in refused)
    denied = admin.execute_command("ACL", "LOG")
    users = {_field(entry, "username") for entry in denied}
    assert users == {"bob"}  # Redis refused bob's attempts, and nothing of the service's or alice's
    await bob_redis.aclose()


def _worker_refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused to answer a ")]


def _field(entry, name: str) -> str:
    """A field of an ACL LOG entry (a flat list or a dict, depending on the client's parsing)."""
    if isinstance(entry, dict):
        value = entry.get(name) or entry.get(name.encode())
    else:
        pairs = dict(zip(entry[::2], entry[1::2], strict=False))
        value = pairs.get(name) or pairs.get(name.encode())
    return value.decode() if isinstance(value, bytes) else str(value)
