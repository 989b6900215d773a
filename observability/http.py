"""A small HTTP port in the process's own event loop (aiohttp): health probes for any process,
and an optional bearer token for everything but the probes.

`/healthz` answers while the event loop runs and the process's loops are alive; `/readyz`
answers 200 only when every readiness check passes (503 otherwise, naming the failed checks).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("workpools.http")

Checks = Callable[[], Awaitable[dict[str, Any]]]
"""Named checks: each value True when passing, else a short reason (a string) or False."""

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
}


def token_guard(token: str | None) -> Any:
    """Everything but the probes and the page's static files asks for `token` when one is set:
    `Authorization: Bearer <token>` or `?token=<token>`."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token and request.path not in OPEN_PATHS and not request.path.startswith("/page/"):
            given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(text="A token is needed: ?token=… or Authorization: Bearer …")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard


def probe_routes(app: web.Application, live: Checks, ready: Checks) -> None:
    started = time.monotonic()

    async def healthz(request: web.Request) -> web.Response:
        return await _answer(live, {"uptime_seconds": round(time.monotonic() - started, 1)})

    async def readyz(request: web.Request) -> web.Response:
        return await _answer(ready, {})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def _answer(checks: Checks, extra: dict[str, Any]) -> web.Response:
    try:
        results = await asyncio.wait_for(checks(), 5.0)
    except Exception as exc:  # a check that hangs or fails is a failed probe, not a 500
        results = {"checks": f"{type(exc).__name__}"}
    failed = [name for name, result in results.items() if result is not True]
    body = {"status": "fail" if failed else "ok", "checks": results, **extra}
    return web.json_response(body, status=503 if failed else 200)


class HttpPort:
    """Serves `app` on host:port (0: any free port) until `stop()`."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
