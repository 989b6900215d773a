"""Redis commands of concurrent callers in one pipelined round trip (`transport.pipelined`), on a
real Redis: every caller's commands run, in order, each caller hears of its own failure only, and
a request's reply goes out before its acknowledgement."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ResponseError

from schemas.channels import Channels
from transport.pipelined import Entry, Pipelined


@contextmanager
def _counting_pipelines(redis) -> Iterator[list[int]]:
    """How many pipelines the client made meanwhile (one per round trip of `Pipelined`)."""
    made = [0]
    make = redis.pipeline

    def counted(*args, **kwargs):
        made[0] += 1
        return make(*args, **kwargs)

    redis.pipeline = counted
    try:
        yield made
    finally:
        del redis.pipeline


async def _pending(redis, stream: str, group: str) -> int:
    return (await redis.xpending(stream, group))["pending"]


async def test_replies_and_acknowledgements_of_one_loop_turn_share_a_round_trip(redis, prefix):
    channels = Channels(prefix)
    stream, group, channel = channels.rpc("op"), channels.rpc_group, channels.reply("client")
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for k in range(20):
        await redis.xadd(stream, {"data": f"request {k}"})
    read = await redis.xreadgroup(group, "c", {stream: ">"}, count=20)
    entries = [entry_id for entry_id, _ in read[0][1]]
    assert await _pending(redis, stream, group) == 20
    listener = redis.pubsub()
    await listener.subscribe(channel)
    await listener.get_message(timeout=1)  # the subscription's confirmation
    pipelined = Pipelined(redis)

    with _counting_pipelines(redis) as pipelines:
        await asyncio.gather(
            *(
                pipelined.reply_and_ack((channel, f"reply {k}".encode()) if k % 4 else None, stream, group, entry)
                for k, entry in enumerate(entries)
            )
        )

    assert pipelines == [1]
    assert await _pending(redis, stream, group) == 0
    replies = []
    while (message := await listener.get_message(timeout=1)) is not None:
        replies.append(message["data"].decode())
    assert replies == [f"reply {k}" for k in range(20) if k % 4]
    await listener.aclose()


async def test_a_failed_command_fails_its_caller_only(redis, prefix):
    good, bad = Channels(prefix).events, Channels(prefix).rpc("not-a-stream")
    await redis.set(bad, "a string")  # XADD to it: WRONGTYPE
    pipelined = Pipelined(redis)

    results = await asyncio.gather(
        pipelined.append([Entry(good, {"n": "1"}, 100)]),
        pipelined.append([Entry(good, {"n": "2"}, 100), Entry(bad, {"n": "x"}, 100)]),
        pipelined.append([Entry(good, {"n": "3"}, 100)]),
        return_exceptions=True,
    )

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ResponseError)
    assert "WRONGTYPE" in str(results[1])
    assert [fields[b"n"] for _, fields in await redis.xrange(good)] == [b"1", b"2", b"3"]


async def test_commands_that_cannot_be_built_fail_their_caller_only(redis, prefix):
    stream = Channels(prefix).events
    pipelined = Pipelined(redis)

    def unbuildable(pipe):
        pipe.xadd(stream, {"n": "2"})
        raise ValueError("no such command")

    results = await asyncio.gather(
        pipelined.append([Entry(stream, {"n": "1"}, 100)]),
        pipelined.run(unbuildable),
        pipelined.append([Entry(stream, {"n": "3"}, 100)]),
        return_exceptions=True,
    )

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert [fields[b"n"] for _, fields in await redis.xrange(stream)] == [b"1", b"2", b"3"]


async def test_nothing_to_append_sends_nothing(redis):
    pipelined = Pipelined(redis)
    with _counting_pipelines(redis) as pipelines:
        await pipelined.append([])
    assert pipelines == [0]
