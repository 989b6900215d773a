"""Builds one workpools replica: the broker, its subscribers, and the background loops."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.redis import RedisBroker, RedisRouter, StreamSub
from faststream.specification import AsyncAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ResponseError

from handlers import operations, readiness, worker_channel, worker_polls
from handlers.rpc import Deps
from observability.replica import Observability
from replica.foreman import ForemanLease, foreman_tick, sweep_run_leases
from replica.housekeeping import Housekeeping
from replica.in_flight import InFlight
from replica.loops import Loops
from replica.outbox import EventRelay
from replica.reclaimer import Reclaimer
from replica.request_gate import request_gate
from replica.rights import check_rights
from schemas.channels import REQUEST_STREAM_MAXLEN, Channels
from schemas.scheduling import ReadyMark
from schemas.settings import Settings
from services.db import Database, DbTimeouts, Tx
from services.foreman import ForemanRules
from transport.envelope import JSONEnvelope, decode_body
from transport.pipelined import Pipelined

log = logging.getLogger("workpools")


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 5)


async def create_groups(redis: Redis, streams: list[str], group: str) -> None:
    """Create consumer groups at the stream start, so requests sent before the first replica
    started are served too (FastStream would create them at `$`)."""
    for stream in streams:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def foreman_rules(settings: Settings) -> ForemanRules:
    return ForemanRules(
        settings.foreman_inactivity_heartbeat_multiple,
        settings.foreman_fallback_heartbeat_interval_seconds,
        settings.foreman_deployment_last_polled_timeout_seconds,
        settings.foreman_work_queue_last_polled_timeout_seconds,
    )


def make_broker(settings: Settings, streams: int) -> RedisBroker:
    """The replica's broker: the JSON envelope (replies are stamped with the replica's name by the
    request gate, `replica.request_gate`)."""
    return RedisBroker(
        settings.redis_url,
        message_format=JSONEnvelope,
        retry=_retry(),
        log_level=logging.DEBUG,
        client_name=f"workpools-{settings.consumer_name}",
        max_connections=64 + 16 * streams,
        socket_keepalive=True,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        health_check_interval=30,
        graceful_timeout=settings.graceful_timeout_seconds,
    )


def build_app(
    settings: Settings, *, db: Database | None = None, observability: Observability | None = None
) -> FastStream:
    channels = Channels(settings.prefix)
    observability = observability or Observability(settings)  # metrics; `serve` also serves its HTTP port
    db = db or Database(
        settings.database_url, pool_size=settings.db_pool_size, timeouts=DbTimeouts.from_settings(settings)
    )
    broker = make_broker(settings, len(channels.all_rpc_streams()))
    redis = Redis.from_url(
        settings.redis_url,
        retry=_retry(),
        client_name=f"workpools-{settings.consumer_name}-bg",
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
    )
    in_flight = InFlight(
        redis,
        channels.rpc_group,
        settings.consumer_name,
        channels.all_rpc_streams(),
        idle_seconds=settings.reclaim_idle_seconds / 6,
        max_age=2 * settings.request_timeout_seconds,
    )

    # Requests: every one gets an answer (errors included); stale ones are dropped (both in the
    # request gate); slow ones are kept from the reclaimers while this replica works on them;
    # writes run once per request id (in the subscribers, `handlers.operations`).
    # one batcher for the replica's pipelined commands: replies and acknowledgements, ready
    # marks and events share round trips
    pipelined = Pipelined(redis)
    gate = request_gate(
        observability.request_recorder(),
        channels,
        settings.request_timeout_seconds,
        settings.max_message_bytes,
        pipelined,
    )
    rpc = RedisRouter(middlewares=[gate], decoder=decode_body)
    rpc.publisher(  # declared for the AsyncAPI document; marks are sent in batches by `ready`
        stream=StreamSub(channels.ready, maxlen=settings.ready_maxlen),
        message_format=JSONEnvelope,
        schema=ReadyMark,
        title=f"{channels.ready}:publish",
        description="One ready mark per poll, after the poll's commit.",
    )
    ready = readiness.ReadyMarkPublisher(redis, channels.ready, settings.ready_maxlen, pipelined)
    operations.register(rpc, channels, settings, Deps(db, ready.publish))

    # Background consumers: a failure leaves the message pending, for the reclaimer.
    background = RedisRouter(middlewares=observability.message_middlewares())
    seen = worker_channel.SeenMessages(redis, channels)
    readiness.register(background, channels, settings, db)
    waiters = worker_polls.Waiters()
    polls = worker_polls.PollServer(redis, seen, db, waiters, ready.publish, settings.rpc_concurrency)
    worker_polls.register(background, channels, polls)
    broker.include_routers(rpc, background)

    multiple, fallback = (
        settings.foreman_inactivity_heartbeat_multiple,
        settings.foreman_fallback_heartbeat_interval_seconds,
    )
    heartbeats = worker_channel.HeartbeatIngest(
        redis,
        channels,
        db,
        seen,
        settings.heartbeat_flush_seconds,
        tolerance=lambda interval: float(multiple * (interval or fallback)),
    )
    relay = EventRelay(
        db,
        redis,
        channels.events,
        settings.events_maxlen,
        grace_seconds=settings.outbox_grace_seconds,
        pipelined=pipelined,
    )

    async def announce(tx: Tx) -> None:
        """After a commit: publish its events, and wake the pollers waiting on its pools. A
        failure here does not undo the commit: it is logged, the events wait in the outbox for
        the sweep, and waiting polls look again when their wait or next wake ends."""
        try:
            if tx.events:
                await relay.publish(tx.events)
            if tx.wakes:
                pipe = redis.pipeline(transaction=False)
                for name in tx.wakes:
                    pipe.publish(channels.wake, name)
                await pipe.execute()
        except Exception:
            log.warning("after a commit: could not publish its events or wake-ups (left to the sweep)", exc_info=True)

    db.after_commit = announce
    groups = [(stream, channels.rpc_group) for stream in channels.all_rpc_streams()]
    reclaimer = Reclaimer(
        redis,
        [*groups, (channels.ready, channels.ready_group)],
        settings.consumer_name,
        channels.dead,
        idle=settings.reclaim_idle_seconds,
        max_deliveries=settings.max_deliveries,
        maxlen=REQUEST_STREAM_MAXLEN,
        observe=observability.metrics.observe if observability.collecting else None,
    )
    housekeeping = Housekeeping(
        redis,
        db,
        [*groups, (channels.ready, channels.ready_group)],
        settings.consumer_name,
        settings.gone_consumer_idle_seconds,
    )
    loops = Loops()
    keep_fresh = Loops()  # runs until the in-flight requests are done (after the broker stopped)

    app = FastStream(
        broker,
        specification=AsyncAPI(
            title="workpools",
            version="0.1.0",
            description="Prefect-compatible work pools, queues and workers over Redis streams.",
        ),
        logger=log,
    )

    @app.on_startup
    async def prepare() -> None:
        await check_rights(redis, settings.prefix)
        await create_groups(redis, channels.all_rpc_streams(), channels.rpc_group)
        await create_groups(redis, [channels.ready], channels.ready_group)

    foreman_lease = ForemanLease(redis, channels.foreman_lease, settings.consumer_name, settings.foreman_lease_seconds)
    observability.attach(app, broker, db, redis, loops, foreman_lease.holds)

    @app.after_startup
    async def start_loops() -> None:
        keep_fresh.every(settings.reclaim_idle_seconds / 3, in_flight.touch, "in-flight touch")
        loops.run(heartbeats.run(loops.stopping), "heartbeat ingest")
        loops.run(waiters.listen(redis, channels.wake, loops.stopping), "wake listener")
        loops.every(settings.outbox_sweep_seconds, relay.sweep, "outbox sweep")
        loops.every(settings.reclaim_every_seconds, reclaimer.reclaim_all, "reclaim")
        loops.every(settings.housekeeping_seconds, housekeeping.run, "housekeeping")
        if settings.foreman_enabled:
            rules = foreman_rules(settings)
            loops.every(settings.foreman_loop_seconds, lambda: foreman_tick(db, foreman_lease, rules), "foreman")
            loops.every(settings.lease_sweep_seconds, lambda: sweep_run_leases(db, foreman_lease), "lease sweep")

    @app.on_shutdown
    async def stop_loops() -> None:
        await polls.stop()
        await loops.stop()
        await relay.drain()
        if settings.foreman_enabled:
            await foreman_lease.release()

    @app.after_shutdown
    async def close() -> None:
        await keep_fresh.stop()
        await redis.aclose()
        await db.dispose()

    return app
