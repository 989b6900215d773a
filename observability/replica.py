"""A replica's observability: its metrics, and its HTTP port (probes, /metrics, the status page)
serving whichever build of the replica is current (the port stays up while the replica is
rebuilt after Redis lost its consumer groups, and says "not ready" meanwhile)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from alembic.script import ScriptDirectory
from faststream.redis import RedisBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text

from observability.http import HttpPort, probe_routes, token_guard
from observability.latency import flush_window, latency_series
from observability.metrics import Metrics
from observability.requests import RequestRecorder
from observability.status import StatusCollector, StatusReader, publish_status, snapshot_age
from schemas.channels import Channels
from schemas.settings import Settings
from services.db import Database

log = logging.getLogger("workpools")

PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
LATENCY_FLUSH_SECONDS = 5.0


@dataclass
class Running:
    """The parts of the current build that the probes and the page look at."""

    broker: RedisBroker
    db: Database
    redis: Redis


class Observability:
    """One per replica process (`workpools serve`), or one per test replica."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channels = Channels(settings.prefix)
        self.metrics = Metrics(settings.consumer_name)
        self.status = StatusReader(self.channels.status)
        self.metrics.registry.register(StatusCollector(self.status))
        self.running: Running | None = None
        self.port: HttpPort | None = None
        self._head: str | None = None

    # composition hooks (replica/app.py)

    @property
    def collecting(self) -> bool:
        """Metrics are collected only where they can be read: with the HTTP port enabled."""
        return self.settings.http_enabled

    def message_middlewares(self) -> list[Any]:
        """FastStream's message metrics, in this replica's registry, for the subscribers other than
        the request streams' (the request gate counts requests, `observability.requests`)."""
        return [self.metrics.message_middleware()] if self.collecting else []

    def request_recorder(self) -> RequestRecorder:
        """Request log lines, and request metrics when collected (the request gate records each
        request with it, `replica.request_gate`)."""
        return RequestRecorder(self.metrics if self.collecting else None, self.settings.consumer_name)

    def attach(self, app: Any, broker: RedisBroker, db: Database, redis: Redis, loops: Any, holds: Any) -> None:
        """Observe this build: services report to the metrics; after start-up, the foreman's
        replica publishes the status snapshot and every replica its dispatch latencies."""
        settings, metrics = self.settings, self.metrics
        if self.collecting:
            db.observe = metrics.observe

        async def status_tick() -> None:
            held = await holds()
            metrics.observe("foreman", holds=held)
            if held:
                await publish_status(
                    db,
                    redis,
                    self.channels.status,
                    settings.consumer_name,
                    settings.late_after_seconds,
                    settings.status_seconds,
                )

        async def flush() -> None:
            await flush_window(redis, self.channels.dispatch_latency, metrics.window, settings.consumer_name)

        @app.after_startup
        async def observing() -> None:
            self.running = Running(broker, db, redis)
            if settings.foreman_enabled:
                loops.every(settings.status_seconds, status_tick, "status snapshot")
            if self.collecting:
                loops.every(LATENCY_FLUSH_SECONDS, flush, "dispatch latency flush")

        @app.on_shutdown
        async def not_observing() -> None:
            self.running = None

    # the HTTP port

    async def start_http(self) -> str | None:
        """Serve the port when enabled; a port that cannot be bound is logged, not fatal."""
        settings = self.settings
        if not settings.http_enabled:
            return None
        web_app = web.Application(middlewares=[token_guard(settings.http_token)])
        probe_routes(web_app, self.live, self.ready)
        web_app.router.add_get("/metrics", self.metrics_text)
        web_app.router.add_get("/api/status", self.status_json)
        web_app.router.add_get("/", self.page)
        web_app.router.add_get("/page/{name}", self.page_file)
        self.port = HttpPort(web_app, settings.http_host, settings.http_port)
        try:
            url = await self.port.start()
        except OSError as exc:
            log.error("HTTP port %s:%s not served: %s", settings.http_host, settings.http_port, exc.strerror or exc)
            self.port = None
            return None
        log.info("status page: %s  (metrics: %smetrics, probes: %shealthz %sreadyz)", url, url, url, url)
        return url

    async def stop_http(self) -> None:
        if self.port is not None:
            await self.port.stop()
            self.port = None

    # probes

    async def live(self) -> dict[str, Any]:
        return {"event_loop": True}

    async def ready(self) -> dict[str, Any]:
        running = self.running
        if running is None:
            return {"replica": "starting"}
        redis_ok, postgres, groups = await asyncio.gather(
            _ok(running.redis.ping()), self._database(running.db), self._groups(running.redis), return_exceptions=False
        )
        subscribers = [sub for sub in running.broker.subscribers if not sub.running]
        return {
            "replica": True,
            "redis": redis_ok,
            "postgres": postgres[0],
            "migrations": postgres[1],
            "consumer_groups": groups if redis_ok is True else "redis unreachable",
            "subscriptions": True if running.broker.running and not subscribers else f"{len(subscribers)} stopped",
        }

    async def _database(self, db: Database) -> tuple[Any, Any]:
        try:
            version = await asyncio.wait_for(_migration_version(db), 2.0)
        except Exception as exc:
            return _reason(exc), "postgres unreachable"
        head = self._migration_head()
        return True, True if version == head else f"at {version}, head is {head}"

    def _migration_head(self) -> str | None:
        if self._head is None:
            from migrations import alembic_config

            self._head = ScriptDirectory.from_config(alembic_config(self.settings.database_url)).get_current_head()
        return self._head

    async def _groups(self, redis: Redis) -> Any:
        streams = [*self.channels.all_rpc_streams(), self.channels.ready]
        try:
            pipe = redis.pipeline(transaction=False)
            for stream in streams:
                pipe.xinfo_groups(stream)
            answers = await asyncio.wait_for(pipe.execute(raise_on_error=False), 2.0)
        except Exception as exc:
            return _reason(exc)
        wanted = {self.channels.rpc_group, self.channels.ready_group}
        missing = [
            stream
            for stream, groups in zip(streams, answers, strict=True)
            if isinstance(groups, Exception) or not wanted & {_text(g["name"]) for g in groups}
        ]
        return True if not missing else f"missing on {len(missing)} streams"

    # metrics and the page

    async def metrics_text(self, request: web.Request) -> web.Response:
        running = self.running
        if running is not None:
            try:
                await self.status.refresh(running.redis)
            except Exception:
                log.debug("status snapshot not read", exc_info=True)
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_json(self, request: web.Request) -> web.Response:
        running = self.running
        body: dict[str, Any] = {"replica": self.settings.consumer_name, "ready": running is not None}
        if running is not None:
            try:
                snapshot = await self.status.refresh(running.redis)
                body["snapshot"] = snapshot
                body["snapshot_age"] = snapshot_age(snapshot) if snapshot else None
                body["events"] = await recent_events(running.redis, self.channels.events)
                body["latency"] = await latency_series(running.redis, self.channels.dispatch_latency)
            except Exception as exc:
                body["ready"], body["error"] = False, _reason(exc)
        return web.json_response(body)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=_page_text("index.html"), content_type="text/html")

    async def page_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in PAGE_FILES:
            raise web.HTTPNotFound()
        return web.Response(text=_page_text(name), content_type=PAGE_FILES[name])


async def recent_events(redis: Redis, stream: str, count: int = 25) -> list[dict[str, Any]]:
    """The latest events: name, when, and the resource's name — never a payload."""
    events = []
    for _, fields in await redis.xrevrange(stream, count=count):
        try:
            event = json.loads(fields[b"event"])
            resource = event.get("resource") or {}
            events.append(
                {
                    "event": event.get("event"),
                    "occurred": event.get("occurred"),
                    "resource": resource.get("prefect.resource.name") or resource.get("prefect.resource.id"),
                }
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
    return events


async def _migration_version(db: Database) -> str | None:
    async with db.reader.connect() as conn:
        return await conn.scalar(text("SELECT version_num FROM alembic_version"))


def _page_text(name: str) -> str:
    return resources.files("observability").joinpath("page", name).read_text(encoding="utf-8")


async def _ok(check: Any) -> Any:
    try:
        await asyncio.wait_for(check, 2.0)
        return True
    except Exception as exc:
        return _reason(exc)


def _reason(exc: BaseException) -> str:
    """A short reason without the exception's text (which may name a URL)."""
    return f"unreachable ({type(exc).__name__})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
