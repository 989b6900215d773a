"""A fault-injecting TCP proxy in front of a real Redis, for worker processes.

It reads the Redis protocol (RESP2) in both directions, frame by frame, and forwards every frame
unchanged except the ones a fault picks:

- a PUBLISH of a heartbeat is sent to a channel nobody reads (the heartbeat is lost; the worker
  still gets Redis's own answer, as after a real loss);
- a pub/sub message carrying the answer of a poll is not passed on (the answer is lost);
- a PUBLISH of a heartbeat or a poll is copied, to be published again much later (a late delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field


def frame_end(buffer: bytes, start: int = 0) -> int | None:
    """Where the RESP value starting at `start` ends, or None if it is not complete yet."""
    if start >= len(buffer):
        return None
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header = buffer[start : start + 1], buffer[start + 1 : line_end]
    position = line_end + 2
    if kind in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return position
    if kind in (b"$", b"=", b"!"):
        size = int(header)
        if size < 0:
            return position
        return position + size + 2 if len(buffer) >= position + size + 2 else None
    if kind in (b"*", b">", b"~", b"%", b"|"):
        count = int(header) * (2 if kind in (b"%", b"|") else 1)
        for _ in range(max(count, 0)):
            end = frame_end(buffer, position)
            if end is None:
                return None
            position = end
        return position
    raise ValueError(f"not RESP: {buffer[start : start + 20]!r}")


def bulk_strings(frame: bytes) -> list[bytes] | None:
    """The parts of an array of bulk strings (a command, a pub/sub message); None otherwise."""
    if not frame.startswith((b"*", b">")):
        return None
    parts, position = [], frame.find(b"\r\n") + 2
    while position < len(frame):
        if frame[position : position + 1] != b"$":
            return None
        line_end = frame.find(b"\r\n", position)
        size = int(frame[position + 1 : line_end])
        parts.append(frame[line_end + 2 : line_end + 2 + size])
        position = line_end + 2 + size + 2
    return parts


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


@dataclass
class Faults:
    heartbeats: str
    polls: str
    sink: str
    drop_heartbeats: float = 0.0
    drop_poll_replies: float = 0.0
    drop_first_poll_replies: int = 0
    """The first this many poll answers are lost, whatever `drop_poll_replies` says."""
    copy_late: float = 0.0
    seed: int = 0
    counts: Counter = field(default_factory=Counter)
    late: list[tuple[str, bytes]] = field(default_factory=list)
    """(channel, message) copies to publish again later."""

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def upstream(self, frame: bytes) -> bytes:
        parts = bulk_strings(frame)
        if not parts or len(parts) != 3 or parts[0].upper() != b"PUBLISH":
            return frame
        channel = parts[1].decode()
        if channel not in (self.heartbeats, self.polls):
            return frame
        if self.random.random() < self.copy_late:
            self.late.append((channel, parts[2]))
        if channel == self.heartbeats and self.random.random() < self.drop_heartbeats:
            self.counts["heartbeats dropped"] += 1
            return command(b"PUBLISH", self.sink.encode(), parts[2])
        return frame

    def downstream(self, frame: bytes) -> bytes | None:
        parts = bulk_strings(frame)
        if not parts or len(parts) != 3 or parts[0] != b"message":
            return frame
        try:
            reply = json.loads(parts[2])
        except ValueError:
            return frame
        if isinstance(reply, dict) and isinstance(reply.get("result"), list):  # a poll's answer
            first = self.counts["poll replies dropped"] < self.drop_first_poll_replies
            if first or self.random.random() < self.drop_poll_replies:
                self.counts["poll replies dropped"] += 1
                return None
        return frame


class ChaosProxy:
    def __init__(self, redis_host: str, redis_port: int, faults: Faults) -> None:
        self.redis_host, self.redis_port, self.faults = redis_host, redis_port, faults
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pumps: set[asyncio.Task] = set()

    async def __aenter__(self) -> ChaosProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            redis_reader, redis_writer = await asyncio.open_connection(self.redis_host, self.redis_port)
        except OSError:
            client_writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(client_reader, redis_writer, self.faults.upstream)),
            asyncio.create_task(self._pump(redis_reader, client_writer, self.faults.downstream)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._pumps.discard(pump)
            for writer in (client_writer, redis_writer):
                with contextlib.suppress(Exception):
                    writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault) -> None:
        buffer = b""
        while chunk := await reader.read(65536):
            buffer += chunk
            out, start = [], 0
            while (end := frame_end(buffer, start)) is not None:
                passed = fault(buffer[start:end])
                if passed is not None:
                    out.append(passed)
                start = end
            buffer = buffer[start:]
            if out:
                writer.write(b"".join(out))
                await writer.drain()
