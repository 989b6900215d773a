"""The one middleware every request passes (outermost on the request router): its log ids, the
checks that refuse or drop it before it runs, its time limit, the error table, and its metrics
and log line once its reply's status is known.

One middleware rather than one per rule: FastStream builds, enters and exits every middleware
of a router for every message, so six of them cost more than the rules they carry. In order:

  1. log ids (`observability.logs.request_ids`) and the message for the handlers
     (`handlers.rpc.request_message`);
  2. a `reply_to` outside the service's reply namespaces: not executed, no reply
     (`replica.reply_namespace`);
  3. a caller that stopped waiting: dropped unexecuted (`replica.expired_requests`);
  4. a body over the size limit: 422 before it is parsed (`handlers.errors`);
  5. the handler, cancelled and answered 503 after the request timeout (`replica.request_timeout`);
  6. any exception: its reply from the error table (`handlers.errors`), so every request is answered;
  7. the reply stamped with the replica's name (header `replica`);
  8. the reply published and the request acknowledged, pipelined with the other requests answered
     in the same loop turn (`transport.pipelined`; the subscribers leave both to the gate:
     `no_reply`, manual acknowledgement); 2 and 3 are acknowledged without a reply;
  9. counted (with FastStream's message metrics of its stream) and logged with its status
     (`observability.requests`): `expired` for 2 and 3.

A request whose reply or acknowledgement could not be sent (Redis failed) stays pending: the
reclaimers deliver it again, and a write answers from its stored reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import IgnoredException

from handlers.errors import as_error, error_reply, refuse_oversized
from handlers.rpc import request_message
from observability.logs import request_ids
from observability.requests import RequestRecorder
from replica.expired_requests import DropExpired
from replica.reply_namespace import refuse_foreign_reply_to
from replica.request_timeout import timed_out
from schemas.channels import Channels
from transport.pipelined import Pipelined

log = logging.getLogger("workpools")


class RequestGate(BaseMiddleware):
    recorder: RequestRecorder
    replica: str
    channels: Channels
    timeout_seconds: float
    max_bytes: int
    settle: Pipelined

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        headers = msg.headers
        stream = str(msg.raw_message.get("channel", ""))
        op = stream.rsplit(".", 1)[-1]
        ids = {"operation": op, "correlation_id": msg.correlation_id}
        if request_id := headers.get("request_id"):
            ids["request_id"] = request_id
        ids_token = request_ids.set(ids)
        message_token = request_message.set(msg)
        message = self.recorder.received(stream, len(msg.body))
        started = time.perf_counter()
        status = "500"
        try:
            try:
                response = await self._answer(call_next, msg, headers)
            except IgnoredException:  # AckMessage: refused or expired, acknowledged without a reply
                status, response = "expired", None
            else:
                reply_headers = response.headers
                reply_headers["replica"] = self.replica
                status = reply_headers.get("status", "200")
        finally:  # counted and logged before its reply leaves: a caller answered sees it counted
            self.recorder.record(op, status, time.perf_counter() - started, message)
            request_message.reset(message_token)
            request_ids.reset(ids_token)
        await self._reply_and_ack(msg, response)
        return response

    async def _reply_and_ack(self, msg: Any, response: Any) -> None:
        try:
            await self.settle.answer(msg, response, self.channels.rpc_group)
        except Exception:
            log.warning(
                "could not answer or acknowledge request %s; left pending for redelivery",
                msg.correlation_id,
                exc_info=True,
            )

    async def _answer(self, call_next: Any, msg: Any, headers: dict[str, Any]) -> Any:
        try:
            refuse_foreign_reply_to(self.channels, msg)
            DropExpired.check(msg, headers)
            refuse_oversized(msg, self.max_bytes)
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    return await call_next(msg)
            except TimeoutError:
                raise timed_out(msg, self.timeout_seconds) from None
        except IgnoredException:
            raise
        except Exception as exc:
            return error_reply(as_error(exc))


def request_gate(
    recorder: RequestRecorder, channels: Channels, timeout_seconds: float, max_bytes: int, settle: Pipelined
) -> type[RequestGate]:
    return type(
        "RequestGateOf",
        (RequestGate,),
        {
            "recorder": recorder,
            "replica": recorder.replica,
            "channels": channels,
            "timeout_seconds": timeout_seconds,
            "max_bytes": max_bytes,
            "settle": settle,
        },
    )
