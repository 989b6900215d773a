"""The worker channel under load: many WorkerClients polling, and how far pub/sub subscribers
lag (Redis output buffers)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis


class WorkerPollers:
    """`count` WorkerClients (workers `{name}-0`..), one per concurrent poller; `op()` polls
    with the next one (round robin) and counts the runs returned.

        async with WorkerPollers(redis_url, prefix, pool, 32) as pollers:
            await run_load(pollers.op, requests=3000, concurrency=32)
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        pool: str,
        count: int,
        *,
        limit: int = 10,
        name: str = "bench-poller",
        timeout: float = 10.0,
    ) -> None:
        from client.workers import WorkerClient

        self.clients = [
            WorkerClient(redis_url, prefix, work_pool_name=pool, worker_name=f"{name}-{i}", timeout=timeout)
            for i in range(count)
        ]
        self.limit = limit
        self.polls = 0
        self.runs = 0
        self._next = 0

    async def op(self) -> None:
        client = self.clients[self._next % len(self.clients)]
        self._next += 1
        runs = await client.get_scheduled_flow_runs(limit=self.limit)
        self.polls += 1
        self.runs += len(runs)

    def reset_counts(self) -> None:
        self.polls = self.runs = 0

    async def __aenter__(self) -> WorkerPollers:
        opened = []
        try:
            for client in self.clients:
                await client.__aenter__()
                opened.append(client)
        except BaseException:
            for client in opened:
                await client.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self.clients:
            await client.__aexit__(None, None, None)


class PubSubBacklog:
    """Samples, in the background, the largest Redis output buffer (CLIENT LIST `omem`, bytes)
    of pub/sub subscribers named `{name_prefix}*`: how far the subscribers lag behind the
    publishers. Redis disconnects a subscriber beyond `client-output-buffer-limit pubsub`
    (default 32 MB hard, 8 MB for 60 s), and its messages are lost."""

    def __init__(self, redis_url: str, name_prefix: str, every: float = 0.2) -> None:
        self.redis_url, self.name_prefix, self.every = redis_url, name_prefix, every
        self.max_bytes = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            while True:
                for c in await redis.client_list():
                    if str(c.get("name", "")).startswith(self.name_prefix) and int(c.get("sub", 0) or 0) > 0:
                        self.max_bytes = max(self.max_bytes, int(c.get("omem", 0) or 0))
                await asyncio.sleep(self.every)
        finally:
            await redis.aclose()

    def start(self) -> None:
        self.max_bytes = 0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.max_bytes
