"""`workpools events tail`, `dead ls | show | replay` and `health` against one real replica."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from uuid import UUID

from redis import Redis

from schemas import wire
from schemas.channels import Channels, Op
from tests.cli import as_json, as_jsonl, command_env, row, rows, workpools
from tests.factories import unique

WORKPOOLS = [sys.executable, "-c", "from cli.main import main; main()"]


def test_events_tail_shows_the_latest_events_as_lines_and_json(cli_env):
    name = unique("pool")
    workpools(cli_env, "work-pool", "create", name, "--type", "process")
    workpools(cli_env, "work-pool", "pause", name)

    latest = as_jsonl(workpools(cli_env, "events", "tail", "-n", "50", "-o", "jsonl"))
    mine = [e for e in latest if e["resource"].get("prefect.resource.name") == name]
    assert [e["event"] for e in mine] == [
        "prefect.work-pool.created",
        "prefect.work-pool.not-ready",
        "prefect.work-pool.paused",
    ]
    assert mine[0]["occurred"] <= mine[2]["occurred"] and UUID(mine[2]["id"])

    only_paused = as_json(
        workpools(cli_env, "events", "tail", "-n", "50", "-e", "prefect.work-pool.paused", "-o", "json")
    )
    assert {e["event"] for e in only_paused} == {"prefect.work-pool.paused"}
    # The stream may carry other pools' events between and after ours: the test database is
    # shared by every replica of the session, and this replica's foreman also marks their pools
    # NOT_READY. Only the order of one pool's changes is promised (docs/events.md#order).
    lines = workpools(cli_env, "events", "tail", "-n", "50").stdout.splitlines()
    assert [line.split()[-2:] for line in lines if line.endswith(f"  {name}")] == [
        ["prefect.work-pool.created", name],
        ["prefect.work-pool.not-ready", name],
        ["prefect.work-pool.paused", name],
    ]
    [last] = workpools(cli_env, "events", "tail", "-n", "1").stdout.splitlines()
    assert len(last.split()) == 4  # date, time, event name, resource name
    assert workpools(cli_env, "events", "tail", "-n", "0", "-o", "json").stdout.strip() == "[]"


def test_events_tail_follow_prints_new_events_until_interrupted(cli_replica, cli_env):
    settings, _ = cli_replica
    before, after = unique("before"), unique("after")
    workpools(cli_env, "work-pool", "create", before, "--type", "process")
    follower = subprocess.Popen(
        [*WORKPOOLS, "events", "tail", "-n", "1", "-f", "-o", "jsonl"],
        env={**os.environ, **command_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if the test runner ignores it
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        json.loads(lines.get(timeout=60))  # the latest event (whichever it is): the follower is reading now
        workpools(cli_env, "work-pool", "create", after, "--type", "process")
        followed: list[str] = []
        deadline = time.monotonic() + 30
        while len(followed) < 2 and time.monotonic() < deadline:
            event = json.loads(lines.get(timeout=30))
            if event["resource"].get("prefect.resource.name") == after:
                followed.append(event["event"])
        assert followed == ["prefect.work-pool.created", "prefect.work-pool.not-ready"]
    finally:
        follower.send_signal(signal.SIGINT)  # how a person stops it: Ctrl-C
        try:
            _, err = follower.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            follower.kill()
            _, err = follower.communicate()
            raise AssertionError(f"events tail -f did not stop on SIGINT: {err}") from None
    assert follower.returncode == 0, err
    assert err == ""


def dead_letter(redis: Redis, channels: Channels, op: Op, body: object, request_id: str) -> str:
    """A request as the reclaimer leaves it in `{prefix}.dead` after its last delivery."""
    headers = {
        "correlation_id": uuid.uuid4().hex,
        "reply_to": channels.reply("gone"),
        "deadline": f"{time.time() - 60:.3f}",
        "request_id": request_id,
        "deliveries": "3",
    }
    fields = {
        "stream": channels.rpc(op),
        "entry_id": "1-0",
        "reason": "not answered after 3 deliveries",
        wire.DATA_FIELD: wire.encode(body, headers),
    }
    return redis.xadd(channels.dead, fields).decode()


def test_dead_letters_are_listed_shown_and_replayed_once(cli_replica, cli_env):
    settings, _ = cli_replica
    channels = Channels(settings.prefix)
    redis = Redis.from_url(settings.redis_url)
    assert workpools(cli_env, "dead", "ls").stdout.strip() == "No dead letters."
    name = unique("pool")
    request_id = uuid.uuid4().hex
    first = dead_letter(redis, channels, Op.CREATE_WORK_POOL, {"name": name, "type": "process"}, request_id)
    second = dead_letter(redis, channels, Op.CREATE_WORK_POOL, {"name": name, "type": "process"}, request_id)
    unreadable = redis.xadd(
        channels.dead,
        {
            "stream": channels.rpc(Op.READ_WORK_POOL),
            "entry_id": "2-0",
            "reason": "unreadable entry",
            wire.DATA_FIELD: b"{not json",
        },
    ).decode()

    listed = as_json(workpools(cli_env, "dead", "ls", "-o", "json"))
    assert [d["id"] for d in listed] == [first, second, unreadable]
    assert (listed[0]["operation"], listed[0]["reason"], listed[0]["body"]) == (
        "create_work_pool",
        "not answered after 3 deliveries",
        {"name": name, "type": "process"},
    )
    assert listed[0]["headers"]["request_id"] == request_id and listed[2]["headers"] is None
    assert row(workpools(cli_env, "dead", "ls").stdout, first)[2:4] == [
        "create_work_pool",
        "not answered after 3 deliveries",
    ]
    shown = as_json(workpools(cli_env, "dead", "show", first, "-o", "json"))
    assert shown == listed[0]
    assert workpools(cli_env, "dead", "show", "1-1", exit_code=1).stderr.strip() == 'Dead letter "1-1" not found.'

    # Both carry one request id: the pool is created once, the second replay gets the first reply.
    replayed = as_json(workpools(cli_env, "dead", "replay", first, second, "-o", "json"))
    assert [(r["id"], r["status"], r["removed"]) for r in replayed] == [(first, 201, True), (second, 201, True)]
    assert replayed[0]["replica"] == settings.consumer_name
    pools = as_json(workpools(cli_env, "pool", "ls", "-o", "json"))
    assert [p["name"] for p in pools].count(name) == 1

    stuck = workpools(cli_env, "dead", "replay", "--all", exit_code=1)
    assert row(stuck.stdout, unreadable)[2:] == ["-", "-", "unreadable: not replayed", "False"]
    assert [d["id"] for d in as_json(workpools(cli_env, "dead", "ls", "-o", "json"))] == [unreadable]
    redis.close()


def test_health_names_the_replica_that_answers(cli_replica, cli_env):
    settings, _ = cli_replica
    report = as_json(workpools(cli_env, "health", "-o", "json"))
    assert (report["prefix"], report["answering"]) == (settings.prefix, True)
    [replica] = [r for r in report["replicas"] if r["replies"]]
    assert (replica["name"], replica["replies"]) == (settings.consumer_name, 8)
    assert replica["fastest_ms"] > 0 and replica["idle_seconds"] is not None
    table = workpools(cli_env, "health").stdout
    assert [cells[:2] for cells in rows(table)] == [[settings.consumer_name, "8"]]
