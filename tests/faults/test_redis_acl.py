"""Redis ACL users as the README defines them: a replica and its clients work with nothing more
(Redis denies nothing: its ACL LOG stays empty), a replica missing a right or its password stops
at start saying what was refused, a refused client raises at once, and no password is logged."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError

import migrations
from client import WorkerClient, WorkPoolClient
from schemas import wire
from schemas.channels import Channels, Op
from services.db import Database
from tests.factories import make_pool, wait_until
from tests.faults.tools import FAST_RECLAIM, rows_locked, waiting_on_locks
from tests.replicas import Replica, serving

pytestmark = pytest.mark.faults

README = Path(__file__).parents[2] / "README.md"


def readme_acl(user: str, prefix: str, password: str) -> list[str]:
    """The README's `ACL SETUSER <user> …` line, for this test's prefix and password."""
    [line] = [text for text in README.read_text().splitlines() if text.startswith(f"ACL SETUSER {user} ")]
    line = re.sub(r">\S+", f">{password}", line).replace("workpools.", f"{prefix}.")
    return shlex.split(line)


def create_user(fault_redis, rule: list[str]) -> None:
    with fault_redis.client() as admin:
        admin.execute_command(*rule)


async def test_replica_and_clients_work_as_the_readme_acl_users_and_log_no_secret(
    settings, fault_redis, fault_postgres
):
    prefix, channels = settings.prefix, Channels(settings.prefix)
    # passwords with characters a URL must escape (and ini files, and shells)
    service_pw, client_pw, pg_pw = (
        f"{kind}-{uuid.uuid4().hex[:12]}/%@:{uuid.uuid4().hex[:6]}" for kind in ("svc", "cli", "pg")
    )
    create_user(fault_redis, readme_acl("workpools", prefix, service_pw))
    create_user(fault_redis, readme_acl("workpools-client", prefix, client_pw))
    admin = fault_redis.client()
    admin.execute_command("ACL", "LOG", "RESET")
    database_url = fault_postgres.url("workpools", password=pg_pw)  # trust auth: accepted, unused
    await migrations.upgrade(database_url)
    settings = settings.model_copy(
        update={"redis_url": fault_redis.url("workpools", service_pw), "database_url": database_url}
    )
    client_url = fault_redis.url("workpools-client", client_pw)
    db = Database(database_url)
    replica = Replica(settings, "rep-acl", "DEBUG", **FAST_RECLAIM)
    try:
        async with (
            WorkPoolClient(client_url, prefix, timeout=10) as client,
            WorkerClient(client_url, prefix, work_pool_name="acl", worker_name="w", timeout=10) as worker,
        ):
            await wait_until(lambda: serving(client, {"rep-acl"}), timeout=30, interval=0.2)
            await client.create_work_pool(make_pool(name="acl"))
            deployment = await client.create_deployment({"name": "d", "work_pool_name": "acl"})
            await client.create_flow_run({"deployment_id": str(deployment.id)})
            await worker.heartbeat(ack=True)
            [claimed] = await worker.get_scheduled_flow_runs(claim=True, limit=1)
            await client.set_flow_run_state(claimed.flow_run.id, {"type": "PENDING"}, lease_token=claimed.lease.token)
            [first, *_] = await client.read_events()
            await client.read_events(after=str(first.id))

            # a request left pending by a dead replica: reclaimed (XAUTOCLAIM, MULTI/EXEC, XADD, XACK, XDEL)
            reply = client._rpc.replies.expect("orphan")
            orphan = wire.encode({}, {"correlation_id": "orphan", "reply_to": client._rpc.reply_channel})
            stream = channels.rpc(Op.COUNT_WORK_POOLS)
            pipe = admin.pipeline(transaction=True)
            pipe.xadd(stream, {wire.DATA_FIELD: orphan})
            pipe.xreadgroup(channels.rpc_group, "dead-replica", {stream: ">"}, count=1)
            pipe.execute()
            assert (await asyncio.wait_for(reply, 10))[0] == 200

            # a slow request: kept fresh while it runs (XCLAIM … JUSTID)
            async with rows_locked(db, "acl"):
                call = asyncio.create_task(client.create_flow_run({"work_pool_name": "acl", "name": "slow"}))
                await wait_until(lambda: waiting_on_locks(db, 1), timeout=10)
                _, in_flight = await asyncio.wait({call}, timeout=1.5)  # several touches (every 1/3 s)
                assert in_flight == {call}
            assert (await call).name == "slow"
            replica.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(replica.process.wait, 20) == 0
        assert admin.execute_command("ACL", "LOG") == []  # Redis denied the replica and the clients nothing
    finally:
        replica.stop()
        admin.close()
        await db.dispose()
    output = replica.output()
    assert "DEBUG" in output and "NOPERM" not in output
    for secret in (service_pw, client_pw, pg_pw):
        assert secret not in output and quote(secret, safe="") not in output


def _without(rule: list[str], *dropped: str) -> list[str]:
    return [part for part in rule if part not in dropped]


REFUSED = {
    "no-xgroup": (lambda rule: _without(rule, "+xgroup|create"), "NOPERM", "'xgroup|create' command"),
    "no-xreadgroup": (lambda rule: _without(rule, "+xreadgroup"), "NOPERM", "'xreadgroup' command"),
    "no-xautoclaim": (lambda rule: _without(rule, "+xautoclaim"), "NOPERM", "'xautoclaim' command"),
    "no-ping": (lambda rule: _without(rule, "+ping"), "NOPERM", "'ping' command"),
    "no-key-pattern": (
        lambda rule: [p.replace("~", "~other.") if p.startswith("~") else p for p in rule],
        "NOPERM",
        "access one of the keys",
    ),
    "no-channel-pattern": (
        lambda rule: [p.replace("&", "&other.") if p.startswith("&") else p for p in rule],
        "NOPERM",
        "access one of the channels",
    ),
    "wrong-password": (lambda rule: rule, "authentication failed", "invalid username-password pair"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_replica_redis_refuses_stops_at_start_saying_why(settings, fault_redis, case):
    change, kind, what = REFUSED[case]
    password = f"svc-{uuid.uuid4().hex}"
    create_user(fault_redis, change(readme_acl("workpools", settings.prefix, password)))
    used = "not-the-password" if case == "wrong-password" else password
    settings = settings.model_copy(update={"redis_url": fault_redis.url("workpools", used)})
    replica = Replica(settings, "rep-refused", "DEBUG")
    try:
        code = await asyncio.to_thread(replica.process.wait, 30)
    finally:
        replica.stop()
    output = replica.output()
    assert code == 3, output[-2000:]
    assert f"Redis refused this replica ({kind}: " in output and what in output
    assert "retrying" not in output
    assert password not in output and used not in output


async def test_a_client_redis_refuses_raises_at_once(settings, fault_redis):
    password = f"cli-{uuid.uuid4().hex}"
    rule = readme_acl("workpools-client", settings.prefix, password)
    create_user(fault_redis, [p.replace("&", "&other.") if p.startswith("&") else p for p in rule])
    with pytest.raises(AuthenticationError):
        async with WorkPoolClient(fault_redis.url("workpools-client", "wrong"), settings.prefix, timeout=10):
            pass
    with pytest.raises(NoPermissionError):  # may not subscribe to its reply channel
        async with WorkerClient(
            fault_redis.url("workpools-client", password),
            settings.prefix,
            work_pool_name="p",
            worker_name="w",
            timeout=10,
        ):
            pass
