"""Service configuration, from `WORKPOOLS_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKPOOLS_", extra="ignore")

    # repr=False: URLs may carry credentials; they are never printed or logged.
    redis_url: str = Field(default="redis://localhost:6379/0", repr=False)
    database_url: str = Field(default="postgresql+asyncpg://postgres@localhost:5432/workpools", repr=False)
    prefix: str = "workpools"
    consumer_name: str = Field(default_factory=_default_consumer)
    """This replica's name in the consumer groups (unique per process)."""
    rpc_concurrency: int = 16
    """Requests handled at once per operation stream by one replica."""
    db_pool_size: int = 10
    events_maxlen: int = 100_000
    """`{prefix}.events` is trimmed to about this many entries."""
    ready_maxlen: int = 100_000
    """`{prefix}.ready` is trimmed to about this many entries."""
    ready_batch: int = 500
    """Ready marks merged into one transaction at most."""
    ready_pause_seconds: float = 0.25
    """The ready-marker consumer waits this long between batches (marks meanwhile are merged)."""
    foreman_enabled: bool = True
    foreman_loop_seconds: float = 15.0
    foreman_lease_seconds: float = 30.0
    """A foreman whose replica died is replaced within about this long."""
    foreman_inactivity_heartbeat_multiple: int = 3
    foreman_fallback_heartbeat_interval_seconds: int = 30
    foreman_deployment_last_polled_timeout_seconds: int = 60
    foreman_work_queue_last_polled_timeout_seconds: int = 60
    heartbeat_flush_seconds: float = 0.2
    """Heartbeats from the worker channel are written in batches this often."""
    reclaim_idle_seconds: float = 5.0
    """A request or ready mark pending this long (its replica died) is served by another."""
    reclaim_every_seconds: float = 1.0
    max_deliveries: int = 3
    """Deliveries before a message that is never answered goes to `{prefix}.dead`."""
    lease_sweep_seconds: float = 1.0
    """How often expired claim-mode leases are given back (on the foreman's replica)."""
    graceful_timeout_seconds: float = 15.0
    """On SIGTERM, in-flight requests get this long to finish; the rest stay pending for others."""
    # PostgreSQL's timeouts per kind of work (README "Limits"), in seconds; 0 is none.
    db_statement_timeout_seconds: float = 5.0
    """Requests (reads, polls, writes, claims): PostgreSQL cancels any one statement after this
    long (`statement_timeout`); the request is answered 503 and may be retried."""
    db_lock_timeout_seconds: float = 3.0
    """Requests: a statement waiting this long for a row or table lock gives up (`lock_timeout`): 503."""
    db_idle_in_transaction_timeout_seconds: float = 10.0
    """Requests: PostgreSQL ends a session left idle inside a transaction this long (a hung
    replica), so its locks are released (`idle_in_transaction_session_timeout`)."""
    db_heartbeat_statement_timeout_seconds: float = 2.0
    """Worker heartbeats written in bulk (at most the requests' statement timeout)."""
    db_heartbeat_lock_timeout_seconds: float = 0.5
    """Heartbeats of a pool whose row is held elsewhere give way after this (the worker's next beat retries)."""
    db_heartbeat_idle_in_transaction_timeout_seconds: float = 10.0
    db_background_statement_timeout_seconds: float = 30.0
    """Foreman ticks, lease and outbox sweeps, housekeeping: logged, counted, retried next period."""
    db_background_lock_timeout_seconds: float = 5.0
    db_background_idle_in_transaction_timeout_seconds: float = 10.0
    db_migration_statement_timeout_seconds: float = 0.0
    """Migrations (`workpools db upgrade`, `serve` at start-up): none by default."""
    db_migration_lock_timeout_seconds: float = 0.0
    """Set it to bound how long a migration's DDL may queue behind another session's lock (and
    hold up the statements queued behind it); waiting for another replica's migration is exempt."""
    db_migration_idle_in_transaction_timeout_seconds: float = 0.0
    db_connect_timeout_seconds: float = 5.0
    """Opening a PostgreSQL connection, or waiting for a free one in the pool: 503 after this."""
    redis_socket_timeout_seconds: float = 10.0
    """A Redis command of the replica answered in no more than this, else it fails (and is retried)."""
    redis_connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 30.0
    """A request still running after this long is cancelled (rolled back) and answered 503; it is
    logged and counted (`workpools_requests_total{status="503"}`), and no longer kept fresh."""
    housekeeping_seconds: float = 30.0
    """How often every replica trims the request streams (what every group has read), removes
    consumers of replicas that are gone, and drops idempotency records older than a day."""
    gone_consumer_idle_seconds: float = 600.0
    """A consumer with nothing pending that has not read for this long (its replica is gone) is
    removed from its group."""
    max_message_bytes: int = 1_048_576
    """Larger requests and worker messages are refused (422) or dropped."""
    outbox_sweep_seconds: float = 2.0
    """How often each replica publishes events left in the outbox by a replica that died."""
    outbox_grace_seconds: float = 5.0
    """The sweep publishes only events left in the outbox for this long: until then they are
    their committing replica's to publish (and their rows to delete)."""
    http_enabled: bool = True
    """Serve the HTTP port: metrics, health probes and the status page (`observability/`)."""
    http_host: str = "127.0.0.1"
    """The HTTP port's address; `0.0.0.0` to be reached from other hosts (Prometheus, a probe)."""
    http_port: int = 8380
    """0 picks a free port (printed at start)."""
    http_token: str | None = Field(default=None, repr=False)
    """When set, the page and /metrics ask for it (`Authorization: Bearer …` or `?token=…`)."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line."""
    status_seconds: float = 5.0
    """How often the foreman's replica computes the status snapshot (pools, queues, workers)."""
    late_after_seconds: float = 15.0
    """A scheduled run due longer ago than this counts as late."""
