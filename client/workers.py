"""`WorkerClient`: a worker's side of workpools — heartbeats and polls over Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from client.config import prefix_or_default, redis_url_or_default
from client.errors import ServiceUnavailable, error_for
from client.transport import UNREACHABLE, ReplyChannel, connect_redis, redis_user, unreachable
from schemas.channels import Channels
from schemas.scheduling import WorkerFlowRun

log = logging.getLogger("workpools.client")

RESEND_LEASES_WITHIN_SECONDS = 2.5
"""A heartbeat that names `lease_tokens` is sent again only this soon after it was built: half
the service's 5 s release grace, so a late copy cannot end a lease claimed after it was built
(one claimed since then is younger than the grace; README, the lease rules)."""


def _decode(raw: bytes) -> tuple[str, dict[str, Any]]:
    reply = json.loads(raw)
    return reply["correlation_id"], reply


class WorkerClient:
    """`async with WorkerClient(redis_url=..., prefix=..., work_pool_name=..., worker_name=...) as w:`

    `redis_url` and `prefix` default to `WORKPOOLS_REDIS_URL` and `WORKPOOLS_PREFIX` (then
    `redis://localhost:6379/0` and `workpools`), as for the service and `WorkPoolClient`.

    `retries` (2): a poll (claim or not) or an acknowledged heartbeat that gets a 503, no answer
    in time (504) or loses its connection is published again, up to `retries` times after a
    short backoff (0.2 s, 0.4 s …), as a new message (its own `message_id`, `correlation_id` and
    `sent_at`: the first one's id is marked as seen). A claim keeps its `request_id` (one is
    generated when none is given), so a claim that did lease runs before its answer was lost
    gets the same batch, with the same lease tokens, never a second one. A heartbeat recorded
    twice changes nothing more; one that names `lease_tokens` is sent again only within
    `RESEND_LEASES_WITHIN_SECONDS` of the first try (a later copy could end a newer lease)."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        *,
        work_pool_name: str,
        worker_name: str,
        heartbeat_interval_seconds: int | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        self.redis_url, self.prefix = redis_url_or_default(redis_url), prefix_or_default(prefix)
        self.channels = Channels(self.prefix)
        self.user = redis_user(self.redis_url)
        """The Redis user this client logs in as: it publishes on that user's own worker
        channels and is answered in that user's reply namespace (README, Security)."""
        self.work_pool_name = work_pool_name
        self.worker_name = worker_name
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.timeout = timeout
        self.retries = retries
        self.redis = connect_redis(self.redis_url, 8, timeout)
        self.replies = ReplyChannel(self.redis, self.channels.reply(uuid.uuid4().hex, self.user), _decode, timeout)

    async def __aenter__(self) -> WorkerClient:
        await self.replies.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.replies.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    @property
    def heartbeat_channel(self) -> str:
        return self.channels.worker_heartbeats_of(self.user)

    @property
    def poll_channel(self) -> str:
        return self.channels.worker_polls_of(self.user)

    async def _ask(
        self, channel: str, message: dict[str, Any], timeout: float | None = None, resend_within: float | None = None
    ) -> Any:
        """Publish `message` and wait for its answer; sent again after a 503, a 504 or a lost
        connection (see `retries`), but not once `resend_within` seconds have passed."""
        first = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                return await self._ask_once(channel, message, timeout)
            except ServiceUnavailable as exc:
                pause = 0.2 * 2**attempt
                late = resend_within is not None and time.monotonic() + pause - first > resend_within
                if attempt == self.retries or late:
                    raise
                log.info("no answer on %s (%s); sending it again (attempt %d)", channel, exc, attempt + 2)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _ask_once(self, channel: str, message: dict[str, Any], timeout: float | None = None) -> Any:
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        await self.replies.subscribed(timeout)  # after a lost connection: its answer would be missed
        correlation_id = uuid.uuid4().hex
        future = self.replies.expect(correlation_id)
        message = {
            **message,
            "message_id": uuid.uuid4().hex,
            "correlation_id": correlation_id,
            "reply_to": self.replies.channel,
            "sent_at": time.time(),
        }
        try:
            await self.redis.publish(channel, json.dumps(message))
            reply = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ServiceUnavailable(504, "No reply from workpools in time.") from None
        except UNREACHABLE as exc:
            raise unreachable(self.redis, exc) from None
        finally:
            self.replies.forget(correlation_id)
        if reply["status"] >= 400:
            raise error_for(reply["status"], reply.get("detail"), reply.get("error"))
        return reply.get("result")

    def _heartbeat(self, lease_tokens: list[int] | None) -> dict[str, Any]:
        beat: dict[str, Any] = {
            "message_id": uuid.uuid4().hex,
            "sent_at": time.time(),
            "work_pool_name": self.work_pool_name,
            "worker_name": self.worker_name,
            "heartbeat_interval_seconds": self.heartbeat_interval_seconds,
        }
        if lease_tokens is not None:
            beat["lease_tokens"] = lease_tokens
        return beat

    async def heartbeat(self, ack: bool = False, lease_tokens: list[int] | None = None) -> dict[int, float] | None:
        """Publish a heartbeat; with `ack`, wait until it is recorded (404 if the pool is unknown),
        sending it again after a 503 or 504 (see `retries`).

        `lease_tokens`: the leases this worker holds. Exactly those are renewed, and its other
        leases are released once older than the grace (5 s); acknowledged, the answer says which
        were renewed: token -> seconds left. Without it every live lease of the worker is renewed."""
        beat = self._heartbeat(lease_tokens)
        if ack:
            resend_within = RESEND_LEASES_WITHIN_SECONDS if lease_tokens is not None else None
            result = await self._ask(self.heartbeat_channel, beat, resend_within=resend_within)
            if lease_tokens is None or not result:
                return None
            return {lease["token"]: lease["seconds_left"] for lease in result["leases"]}
        try:
            await self.redis.publish(self.heartbeat_channel, json.dumps(beat))
        except UNREACHABLE as exc:
            raise unreachable(self.redis, exc) from None
        return None

    async def get_scheduled_flow_runs(
        self,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        scheduled_after: datetime | None = None,
        limit: int | None = None,
        *,
        claim: bool = False,
        lease_seconds: float | None = None,
        wait_seconds: float = 0,
        request_id: str | None = None,
    ) -> list[WorkerFlowRun]:
        """Poll. `claim` leases the runs to this worker (default lease: four heartbeat intervals,
        renewed by heartbeats); `wait_seconds` waits for work when there is none yet. A claim
        sent again with the same `request_id` (no answer came) returns the same runs: the client
        does so itself after a 503 or 504 (see `retries`), with a request id of its own when
        none is given."""
        lease = lease_seconds or 4 * (self.heartbeat_interval_seconds or 30)
        if claim and request_id is None:
            request_id = uuid.uuid4().hex
        message = {
            "request_id": request_id,
            "claim": claim,
            "lease_seconds": lease,
            "wait_seconds": wait_seconds,
            "work_pool_name": self.work_pool_name,
            "worker_name": self.worker_name,
            "work_queue_names": work_queue_names,
            "scheduled_before": scheduled_before.isoformat() if scheduled_before else None,
            "scheduled_after": scheduled_after.isoformat() if scheduled_after else None,
            "limit": limit,
        }
        result = await self._ask(self.poll_channel, message, timeout=self.timeout + wait_seconds)
        return [WorkerFlowRun.model_validate(item) for item in result]
