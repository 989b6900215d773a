"""The database boundary: engine, transactions, the event outbox, and driver errors -> service errors."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
from pydantic import TypeAdapter
from sqlalchemy.engine import URL, Connection, CursorResult, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.util import greenlet_spawn

from schemas.events import Event
from schemas.settings import Settings
from services.errors import INTEGRITY_CONFLICT, AlreadyExists, Conflict, Invalid, TimedOut, Unavailable

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ExecuteParams = Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""Bound parameters of one statement, or of each row of an executemany."""
Row = RowMapping | Mapping[str, Any]
"""A row read by its column names: as fetched (`.mappings()`), or a dict of the same columns."""
UNIQUE_VIOLATION = "23505"
TIMED_OUT = {
    "57014": "Service Unavailable (the database did not finish the statement in time)",  # statement_timeout
    "55P03": "Service Unavailable (a lock the request needs is held elsewhere)",  # lock_timeout
    "25P03": "Service Unavailable (the transaction was idle too long)",  # idle_in_transaction_session_timeout
}
TIMEOUT_REASONS = {"57014": "statement", "55P03": "lock", "25P03": "idle_in_transaction"}
"""The label each timeout is counted under (`workpools_db_timeouts_total{reason}`)."""
NOT_ANSWERED = "Service Unavailable (the database did not answer in time)"
BACKGROUND_POOL_SIZE = 2
"""Half the connections background work may have (as `pool_size` is half a replica's request
connections): one per loop that writes (foreman, lease sweep, outbox sweep, housekeeping) at
most."""
Observer = Callable[..., None]
"""`observe(what, **facts)`: told what a service did once it is done (runs handed out, a run
started, leases ended …); the replica turns it into metrics. Never raises, never blocks."""
_unit_of_work: ContextVar[Tx | None] = ContextVar("workpools_unit_of_work", default=None)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unobserved(what: str, **facts: Any) -> None:
    return None


class Tx:
    """One open transaction: the time it runs at, what it announces after its commit (events,
    through the outbox, and pools whose waiting pollers should look again), and its connection.

    The connection is checked out of SQLAlchemy's pool as it is (`AsyncEngine.raw_connection`):
    the transaction is begun, committed and rolled back on asyncpg directly, and SQLAlchemy's
    `Connection` is made only for a transaction that runs a SQLAlchemy statement (`execute`).
    SQLAlchemy's begin and commit around every write (a `Connection`, its transaction object,
    events, a greenlet hand-over per step) cost as much CPU as the write's own statements."""

    def __init__(self, now: datetime, engine: AsyncEngine | None = None, pooled: PoolProxiedConnection | None = None):
        self.now = now
        self.events: list[Event] = []
        self.wakes: set[str] = set()
        self.conn: AsyncConnection | None = None
        """SQLAlchemy's connection over this transaction's, made by the first `execute`."""
        self._engine, self._pooled = engine, pooled
        self._raw: asyncpg.Connection | None = None
        self._written = 0

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def unwritten_events(self) -> str | None:
        """The events not yet in the outbox as one JSON array (None when there are none), which
        count as written from now on: the caller's statement writes them (`INSERT_EVENTS`, or a
        statement made with `with_outbox`); should it fail, the transaction fails with it."""
        if self._written == len(self.events):
            return None
        pending, self._written = self.events[self._written :], len(self.events)
        return _EVENTS.dump_json(pending).decode()

    def discard_events(self) -> None:
        """Forget what was emitted: the statement that was to write it did nothing."""
        self.events.clear()
        self._written = 0

    def wake(self, work_pool_name: str | None) -> None:
        """Runs may have become available in this pool (new, rescheduled, or a slot freed)."""
        if work_pool_name is not None:
            self.wakes.add(work_pool_name)

    async def execute(self, statement: Executable, params: ExecuteParams | None = None) -> CursorResult[Any]:
        if self.conn is None:
            assert self._engine is not None and self._pooled is not None
            await self._driver()  # begun here, so SQLAlchemy's statements and ours share it
            self.conn = AsyncConnection(self._engine, Connection(self._engine.sync_engine, connection=self._pooled))
        return await self.conn.execute(statement, params)

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """Run a hot-path statement on this transaction's asyncpg connection (see `Statement`)."""
        driver = await self._driver()
        try:
            rows: list[asyncpg.Record] = await driver.fetch(statement.sql, *[params[name] for name in statement.names])
        except _RAW_FAILURES as exc:
            raise await self._driver_failed(exc) from exc
        return rows

    async def run_script(self, sql: str) -> None:
        """Statements without parameters, in one round trip (the simple query protocol)."""
        driver = await self._driver()
        try:
            await driver.execute(sql)
        except _RAW_FAILURES as exc:
            raise await self._driver_failed(exc) from exc

    async def _driver_failed(self, exc: BaseException) -> Exception:
        if _connection_lost(exc):
            # the connection is gone (PostgreSQL stopped or restarted): not reused, and a 503
            await self._drop_connection(exc)
            return Unavailable("Service Unavailable")
        return translate_driver(exc) if isinstance(exc, asyncpg.PostgresError) else Unavailable("Service Unavailable")

    async def _drop_connection(self, exc: BaseException) -> None:
        if self.conn is not None:
            await self.conn.invalidate(exc)
        elif self._pooled is not None and self._pooled.is_valid:
            self._pooled.invalidate(exc)  # outside a greenlet the adapter closes it without waiting

    async def fetchrow(self, statement: Statement, params: Mapping[str, Any]) -> asyncpg.Record | None:
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    async def _driver(self) -> asyncpg.Connection:
        """The asyncpg connection, inside this transaction: begun at its first statement (an
        empty transaction costs no round trip), through SQLAlchemy's adapter so that a
        SQLAlchemy statement (`execute`) runs in it too."""
        if self._raw is not None:  # begun by an earlier statement of this transaction
            return self._raw
        assert self._pooled is not None
        adapted = self._pooled.dbapi_connection
        try:
            await adapted._start_transaction()  # type: ignore[union-attr]
        except Exception as exc:  # SQLAlchemy's adapter's error: the pooled connection is gone
            await self._drop_connection(exc)
            raise Unavailable("Service Unavailable") from exc
        self._raw = adapted.driver_connection  # type: ignore[union-attr]
        return self._raw

    async def _end(self, commit: bool) -> None:
        """Commit (or roll back) the transaction begun by `_driver`, if one was."""
        adapted = self._pooled.dbapi_connection if self._pooled is not None else None
        begun = getattr(adapted, "_transaction", None)
        if begun is None:
            return
        adapted._transaction = None  # type: ignore[union-attr]  # done, whether or not the call succeeds
        try:
            await (begun.commit() if commit else begun.rollback())
        except _RAW_FAILURES as exc:
            if commit:
                raise await self._driver_failed(exc) from exc
            await self._drop_connection(exc)  # a rollback that failed: the connection is not reused
        except BaseException as exc:  # cancelled mid-way: the connection's state is unknown
            await self._drop_connection(exc)
            raise

    async def _release(self) -> None:
        """Give the connection back to its pool, in a greenlet: the pool closes a connection it
        has no room for, and closing awaits."""
        if self.conn is not None:
            await self.conn.close()  # SQLAlchemy's connection gives the pooled one back
        elif self._pooled is not None:
            await greenlet_spawn(self._pooled.close)


class ReadTx(Tx):
    """A request's reads (`Database.read`), in autocommit: each statement sees the latest commits
    on its own. Hot-path statements (`fetch`) run on a connection of the read pool, asyncpg's
    own, held until the block ends; SQLAlchemy statements (`execute`) on a SQLAlchemy connection
    opened at the first of them. A pool read thus skips SQLAlchemy's connection checkout and
    return (events, greenlet hand-overs, reset), which cost as much CPU as the rest of the read."""

    def __init__(self, db: Database, stack: AsyncExitStack) -> None:
        super().__init__(db.clock())
        self._db, self._stack = db, stack

    async def execute(self, statement: Executable, params: ExecuteParams | None = None) -> CursorResult[Any]:
        if self.conn is None:
            self.conn = await self._stack.enter_async_context(self._db.reader.connect())
        return await self.conn.execute(statement, params)

    async def _driver(self) -> asyncpg.Connection:
        if self._raw is None:
            self._raw = await self._stack.enter_async_context(self._db.read_connection())
        return self._raw

    async def _drop_connection(self, exc: BaseException) -> None:
        if self._raw is not None:
            try:
                self._raw.terminate()  # not given to another read: the pool connects anew
            except asyncpg.InterfaceError:
                pass  # asyncpg found it closed and took it back already
        await self._db.read_connections_lost()


class OneStatementTx(Tx):
    """A write of one statement (`Database.one_statement`), in autocommit: PostgreSQL runs a
    statement atomically, its data-modifying CTEs included, so one that writes an effect, its
    request's record and its events into the outbox needs no transaction around it. Hot-path
    statements (`fetch`) only."""

    async def execute(self, statement: Executable, params: ExecuteParams | None = None) -> CursorResult[Any]:
        raise TypeError("a write of one statement runs a `Statement` (Tx.fetch), not a SQLAlchemy one")

    async def _driver(self) -> asyncpg.Connection:
        if self._raw is None:
            assert self._pooled is not None
            self._raw = self._pooled.dbapi_connection.driver_connection  # type: ignore[union-attr]
        return self._raw


@dataclass(frozen=True)
class Statement:
    """SQL for the request hot paths (a pool read, a poll, a queue create), run on the asyncpg
    connection directly: asyncpg prepares it once per connection, and SQLAlchemy's work per
    execution (statement cache keys, execution context, result processing, the greenlet
    hand-over) — two fifths of a replica's CPU per read — is skipped. Written with `:name`
    parameters; `names` gives their `$n` order. JSONB comes back decoded (SQLAlchemy's codec on
    the connection); JSONB parameters are passed as JSON text."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, sql: str) -> Statement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        return cls(_NAMED.sub(number, sql), tuple(names))


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

_OUTBOX_ROWS = """
    INSERT INTO event_outbox (event)
    SELECT e.event FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(event, n) ORDER BY e.n
"""
INSERT_EVENTS = Statement.of(_OUTBOX_ROWS)
"""A transaction's events into the outbox, in the order emitted (one JSON array, serialised once;
none when `:events` is NULL)."""


def with_outbox(sql: str) -> Statement:
    """`sql` (a statement that writes) with the outbox insert of `INSERT_EVENTS` before it, in
    one statement: a transaction's last write and its events in one round trip. Run it with
    `events=tx.unwritten_events()`."""
    return Statement.of(f"WITH outbox AS ({_OUTBOX_ROWS}) {sql}")


TAKE_EVENTS = Statement.of(
    """
    DELETE FROM event_outbox
     WHERE seq IN (SELECT seq FROM event_outbox
                    WHERE created <= clock_timestamp() - make_interval(secs => CAST(:older_than AS float8))
                    ORDER BY seq LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING seq, event
    """
)
FORGET_EVENTS = Statement.of("DELETE FROM event_outbox WHERE event ->> 'id' = ANY(CAST(:ids AS text[]))")
"""Rows of events their committing replica has published itself."""
_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


def _sqlstate(exc: DBAPIError) -> str:
    for cause in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(cause, "sqlstate", None)
        if state:
            return str(state)
    return ""


def translate(exc: DBAPIError) -> Exception:
    """Map a driver error to the service's vocabulary, once, here."""
    state = _sqlstate(exc)
    if isinstance(exc, IntegrityError):
        log.warning("integrity conflict: %s", exc.orig)
    if isinstance(exc, InterfaceError) and "number of query arguments" in str(exc.orig):  # a filter of 40,000 names
        return Invalid(f"Invalid value: {exc.orig}")
    mapped = _by_state(state, isinstance(exc, IntegrityError), getattr(exc.orig, "__cause__", None) or exc.orig)
    if mapped is not None:
        return mapped
    if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
        return Unavailable("Service Unavailable")
    return exc


_RAW_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
"""How a statement run on asyncpg directly fails (`InternalClientError`: the server dropped the
connection while asyncpg was starting the statement)."""


_SERVER_GONE = ("57P01", "57P02", "57P03", "57P04", "57P05")
"""Operator intervention that ends the session: shutdown (admin, crash), cannot connect now,
database dropped, idle session timeout. Not `57014`, a statement cancelled by its timeout."""


def _connection_lost(exc: BaseException) -> bool:
    """The server went away (restart, shutdown, a dropped connection), as SQLAlchemy's adapter
    would have found for a statement it ran: connection errors (08), the operator intervention
    that ends the session (`_SERVER_GONE`), or the driver's own connection errors."""
    state = str(getattr(exc, "sqlstate", "") or "")
    return (
        state.startswith("08")
        or state in _SERVER_GONE
        or isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError))
    )


def translate_driver(exc: asyncpg.PostgresError) -> Exception:
    """The same mapping for an error of a statement run on asyncpg directly (`Statement`)."""
    state = str(getattr(exc, "sqlstate", "") or "")
    if state.startswith("23"):
        log.warning("integrity conflict: %s", exc)
    return _by_state(state, state.startswith("23"), exc) or exc


def _by_state(state: str, integrity: bool, cause: object) -> Exception | None:
    if integrity:
        # Prefect's generic text either way; a unique violation is a taken name (a rename onto another)
        return (AlreadyExists if state == UNIQUE_VIOLATION else Conflict)(INTEGRITY_CONFLICT)
    if state.startswith(("22", "54")):  # data exception (out of range, NUL byte …), or a value over a
        # limit (a name too long for its unique index …): the request's fault, not the server's
        return Invalid(f"Invalid value: {str(cause).strip()}")
    if state in TIMED_OUT:  # one of the timeouts of `DbTimeouts`: the database is slow or a lock is held
        log.warning("database timeout (%s): %s", state, str(cause).strip())
        return TimedOut(TIMED_OUT[state], TIMEOUT_REASONS[state])
    if state in ("40P01", "40001"):  # deadlock, serialization failure: safe to retry
        log.warning("transaction aborted (%s); answering 503 so the caller retries", state)
        return Unavailable("Service Unavailable")
    return None


def asyncpg_url(url: str | URL) -> URL:
    """The URL as SQLAlchemy's asyncpg dialect takes it: libpq's `sslmode` (which asyncpg does not
    know as a keyword) becomes asyncpg's `ssl`, which takes the same modes (`require`, `verify-full` …)."""
    url = make_url(url)
    if "sslmode" in url.query:
        url = url.difference_update_query(["sslmode"]).update_query_dict({"ssl": url.query["sslmode"]})
    return url


class Kind(StrEnum):
    """What a transaction is for; it decides the timeouts PostgreSQL holds it to (README "Limits")."""

    REQUEST = "request"
    """Reads, polls, writes and claims of requests: the settings of the connection itself (no round trip)."""
    HEARTBEAT = "heartbeat"
    """Worker heartbeats written in bulk: request connections, `SET LOCAL` at the transaction's start."""
    BACKGROUND = "background"
    """Foreman ticks, lease and outbox sweeps, housekeeping: a small pool of their own."""
    MIGRATION = "migration"
    """Alembic migrations: a connection of their own (`migrations.upgrade`)."""


READ_POOL_SETTINGS = {"plan_cache_mode": "force_generic_plan", "synchronous_commit": "off"}
"""What the read pool's connections set beside the request timeouts.

- Each statement keeps the one plan made for it at its first execution. The read pool runs only
  the hot path's `Statement`s (a pool read, a pool's queue ids, the read-only poll, the outbox's
  forget), each written so that the plan does not depend on the values given: keys by equality,
  the poll's time bounds as index conditions. Left to choose, PostgreSQL plans the poll afresh at
  every execution: its generic plan's cost, estimated for a pool of average size, never beats a
  custom plan's. That planning was half the database's CPU per poll.
- Commits do not wait for the WAL flush. What the read pool commits is never state a caller
  relies on: a read-only poll's row locks (they end with its statement) and the deletion of
  outbox rows whose events were published (lost in a database crash, the events are published
  again by the sweep, as publication is at least once). Every write of state commits on the
  engines' connections, durably.

bench/README.md, "The read-only poll on one plan", has the measurements."""

_DRIVER_FAILURES = (DBAPIError, OSError, asyncpg.PostgresConnectionError, PoolTimeout, TimeoutError)
"""What `Database._failed` turns into service errors (503 for every way the database fails to answer)."""
_WHAT = ("statement", "lock", "idle_in_transaction")
_SETTINGS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")


def _ms(seconds: float) -> str:
    """PostgreSQL's milliseconds; 0 is no timeout."""
    return "0" if seconds <= 0 else str(max(1, round(seconds * 1000)))


@dataclass(frozen=True)
class Bounds:
    """The three timeouts PostgreSQL enforces for one kind of work, in seconds (0: none)."""

    statement: float
    lock: float
    idle_in_transaction: float

    def server_settings(self) -> dict[str, str]:
        values = (self.statement, self.lock, self.idle_in_transaction)
        return {name: _ms(value) for name, value in zip(_SETTINGS, values, strict=True)}

    def client_timeout(self) -> float | None:
        """The driver gives up on a statement one second after PostgreSQL should have (a partition)."""
        return self.statement + 1 if self.statement > 0 else None

    def set_local(self, connection: Bounds) -> str:
        """`SET LOCAL` of each setting that differs from the connection's, as one script."""
        mine, theirs = self.server_settings(), connection.server_settings()
        return "; ".join(f"SET LOCAL {name} = {mine[name]}" for name in _SETTINGS if mine[name] != theirs[name])


@dataclass(frozen=True)
class DbTimeouts:
    """How long the database may take, per kind of work (`Kind`). The first three are the
    request's, which every connection of the replica carries (`server_settings`), so a request
    pays nothing for them; heartbeats narrow them with `SET LOCAL`; background work has a pool
    whose connections carry its own; migrations set theirs. The client gives up on a statement
    one second after its statement timeout (a partition, a server that stopped answering), and
    on opening or waiting for a connection after `connect`. Each ends as `TimedOut` (503)."""

    statement: float = 5.0
    lock: float = 3.0
    idle_in_transaction: float = 10.0
    connect: float = 5.0
    heartbeat: Bounds = Bounds(statement=2.0, lock=0.5, idle_in_transaction=10.0)
    background: Bounds = Bounds(statement=30.0, lock=5.0, idle_in_transaction=10.0)
    migration: Bounds = Bounds(statement=0, lock=0, idle_in_transaction=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> DbTimeouts:
        """`WORKPOOLS_DB_*_TIMEOUT_SECONDS`: the request's without a kind in the name."""

        def bounds(kind: str) -> Bounds:
            return Bounds(*(getattr(settings, f"db_{kind}_{what}_timeout_seconds") for what in _WHAT))

        return cls(
            settings.db_statement_timeout_seconds,
            settings.db_lock_timeout_seconds,
            settings.db_idle_in_transaction_timeout_seconds,
            settings.db_connect_timeout_seconds,
            heartbeat=bounds("heartbeat"),
            background=bounds("background"),
            migration=bounds("migration"),
        )

    @property
    def request(self) -> Bounds:
        return Bounds(self.statement, self.lock, self.idle_in_transaction)

    def of(self, kind: Kind) -> Bounds:
        if kind is Kind.HEARTBEAT:
            # on a request connection: the driver's own bound (the request statement's) still holds
            cap = self.statement
            beat = self.heartbeat.statement
            statement = cap if beat <= 0 or (cap > 0 and beat > cap) else beat
            return Bounds(statement, self.heartbeat.lock, self.heartbeat.idle_in_transaction)
        return {Kind.REQUEST: self.request, Kind.BACKGROUND: self.background, Kind.MIGRATION: self.migration}[kind]

    def server_settings(self) -> dict[str, str]:
        """The request's settings, carried by every request connection."""
        return self.request.server_settings()


class Database:
    """Owns the engines. `transaction()` commits the work and its events atomically (outbox).
    `pool_size` sizes the connections: up to twice as many for writes, claims, heartbeats and
    SQLAlchemy reads (`engine`), half as many, at least 2, for hot-path reads (the read pool)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = utcnow,
        pool_size: int = 10,
        timeouts: DbTimeouts = DbTimeouts(),
        pool_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.timeouts = timeouts
        waiting = timeouts.connect if pool_timeout is None else pool_timeout
        self.engine: AsyncEngine = _engine(url, timeouts.request, timeouts.connect, 2 * pool_size, waiting)
        self.background: AsyncEngine = _engine(
            url, timeouts.background, timeouts.connect, 2 * BACKGROUND_POOL_SIZE, timeouts.connect
        )
        """Background work's own connections: it never waits for a request's, nor a request for its."""
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_pool_size, self._pool_timeout = max(2, pool_size // 2), waiting
        self._read_pool: asyncpg.Pool | None = None
        self._read_pool_made = asyncio.Lock()
        self.after_commit: Callable[[Tx], Awaitable[None]] | None = None
        """Called after a commit that has something to announce (events, wakes)."""
        self.observe: Observer = _unobserved
        self._heartbeat_settings = timeouts.of(Kind.HEARTBEAT).set_local(timeouts.request)

    def _failed(self, exc: Exception, kind: Kind) -> Exception:
        """A driver error of a `kind` transaction as a service error; every timeout counted."""
        if isinstance(exc, DBAPIError):
            exc = translate(exc)
        elif isinstance(exc, PoolTimeout):
            log.warning("no %s database connection free in time; answering 503", kind.value)
            exc = TimedOut("Service Unavailable", "no_connection")
        elif isinstance(exc, (OSError, asyncpg.PostgresConnectionError)):
            exc = Unavailable("Service Unavailable")
        elif isinstance(exc, TimeoutError):
            log.warning("the database did not answer a %s statement in time; answering 503", kind.value)
            exc = TimedOut(NOT_ANSWERED, "not_answered")
        return self._timed_out(exc, kind)

    def _timed_out(self, exc: Exception, kind: Kind) -> Exception:
        if isinstance(exc, TimedOut):
            self.observe("db_timeout", kind=kind.value, reason=exc.reason)
        return exc

    @asynccontextmanager
    async def transaction(self, now: datetime | None = None, kind: Kind = Kind.REQUEST) -> AsyncIterator[Tx]:
        """A transaction held to the timeouts of `kind`; inside a request's unit of work
        (`unit_of_work`), that one."""
        ambient = _unit_of_work.get()
        if ambient is not None:
            yield ambient
            return
        engine = self._engine_for(kind)
        try:
            async with self._begun(engine, now) as tx:
                if kind is Kind.HEARTBEAT and self._heartbeat_settings:
                    await tx.run_script(self._heartbeat_settings)
                yield tx
                if (events := tx.unwritten_events()) is not None:
                    await tx.fetch(INSERT_EVENTS, {"events": events})
        except TimedOut as exc:  # a hot-path statement's (`Tx.fetch`), translated already
            self._timed_out(exc, kind)
            raise
        except _DRIVER_FAILURES as exc:
            raise self._failed(exc, kind) from exc
        await self._announce(tx)

    async def _announce(self, tx: Tx) -> None:
        """After a commit: what it has to announce (events, wakes), by `after_commit`."""
        if (tx.events or tx.wakes) and self.after_commit is not None:
            try:
                await self.after_commit(tx)
            except Exception:  # committed is committed: the outbox sweep publishes what is left
                log.warning("after-commit step failed; left to the outbox sweep", exc_info=True)

    @asynccontextmanager
    async def one_statement(self) -> AsyncIterator[Tx]:
        """A request's write of one statement (`OneStatementTx`): on a request connection in
        autocommit, so the statement commits on its own, without a BEGIN and a COMMIT round
        trip, and the locks it takes are held for the statement only. What the block emits is
        announced afterwards, as after a transaction's commit; a block that finds its statement
        did nothing discards its events (`Tx.discard_events`)."""
        try:
            pooled = await self.engine.raw_connection()
            tx = OneStatementTx(self.clock(), self.engine, pooled)
            try:
                yield tx
            finally:
                await tx._release()
        except TimedOut as exc:
            self._timed_out(exc, Kind.REQUEST)
            raise
        except _DRIVER_FAILURES as exc:
            raise self._failed(exc, Kind.REQUEST) from exc
        await self._announce(tx)

    @asynccontextmanager
    async def _begun(self, engine: AsyncEngine, now: datetime | None = None) -> AsyncIterator[Tx]:
        """A transaction on a connection of `engine`'s pool (see `Tx`), at `now` or the time the
        connection was given (not before: a wait for a free one does not date it earlier):
        committed when the block ends, rolled back when it fails, the connection given back
        either way."""
        pooled = await engine.raw_connection()
        tx = Tx(now or self.clock(), engine, pooled)
        try:
            try:
                yield tx
            except BaseException:
                await tx._end(commit=False)
                raise
            await tx._end(commit=True)
        finally:
            await tx._release()

    def _engine_for(self, kind: Kind) -> AsyncEngine:
        if kind is Kind.MIGRATION:
            raise ValueError("migrations run on their own connection (migrations.upgrade)")
        return self.background if kind is Kind.BACKGROUND else self.engine

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Tx]:
        """One transaction shared by every `transaction()` opened inside this block (same task):
        a request's effect and its record commit together."""
        async with self.transaction() as tx:
            token = _unit_of_work.set(tx)
            try:
                yield tx
            finally:
                _unit_of_work.reset(token)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """Reads of a request only: autocommit, one round trip per statement (no BEGIN/COMMIT),
        hot-path statements on the read pool (`ReadTx`)."""
        try:
            async with AsyncExitStack() as stack:
                yield ReadTx(self, stack)
        except TimedOut as exc:
            self._timed_out(exc, Kind.REQUEST)
            raise
        except _DRIVER_FAILURES as exc:
            raise self._failed(exc, Kind.REQUEST) from exc

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the read pool: asyncpg's pool, half as many connections as the request
        engine's pool (a read holds one for a statement), made when first needed, with the
        request timeouts and SQLAlchemy's JSON codecs. Given back without a reset round trip:
        autocommit reads change no session state (asyncpg still rolls back a transaction left
        open)."""
        pool = self._read_pool or await self._make_read_pool()
        try:
            # a connection free now is taken without arming a timer (asyncpg's `wait_for`: 2 % of a
            # read's CPU at concurrency 1); only waiting for one is bounded
            idle = pool.get_idle_size() > 0
            conn = await (pool.acquire() if idle else pool.acquire(timeout=self._pool_timeout))
        except TimeoutError:
            log.warning("no request database connection free in time; answering 503")
            raise TimedOut("Service Unavailable", "no_connection") from None
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def read_connections_lost(self) -> None:
        """A read found its connection gone (PostgreSQL restarted, failed over): the read pool's
        other connections are suspect too, and are replaced when next taken, not tried one by one."""
        if self._read_pool is not None:
            await self._read_pool.expire_connections()

    async def _make_read_pool(self) -> asyncpg.Pool:
        async with self._read_pool_made:
            if self._read_pool is None:
                bounds = self.timeouts.request
                self._read_pool = await asyncpg.create_pool(
                    **connect_options(self.url),
                    min_size=0,
                    max_size=self._read_pool_size,
                    init=_json_codecs,
                    reset=_unchanged,
                    timeout=self.timeouts.connect,
                    command_timeout=bounds.client_timeout(),
                    server_settings=bounds.server_settings() | READ_POOL_SETTINGS,
                )
            return self._read_pool

    @asynccontextmanager
    async def take_outbox(self, batch: int = 500, older_than: float = 0.0) -> AsyncIterator[list[dict[str, Any]]]:
        """Remove up to `batch` events from the outbox, oldest first, of rows written at least
        `older_than` seconds ago, on background work's connections (the sweep's); restored if
        the block fails. Rows another transaction holds are skipped, never waited for."""
        try:
            async with self._begun(self.background) as tx:
                rows = await tx.fetch(TAKE_EVENTS, {"batch": batch, "older_than": older_than})
                yield [row["event"] for row in sorted(rows, key=lambda r: r["seq"])]
        except TimedOut as exc:
            self._timed_out(exc, Kind.BACKGROUND)
            raise
        except (DBAPIError, PoolTimeout) as exc:  # not the block's own (Redis) failures
            raise self._failed(exc, Kind.BACKGROUND) from exc

    async def forget_events(self, ids: Sequence[str]) -> None:
        """Delete the outbox rows of these events (published by their committing replica): one
        autocommit statement on the read pool, no transaction around it."""
        async with self.read() as tx:
            await tx.fetch(FORGET_EVENTS, {"ids": list(ids)})

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self.background.dispose()
        if self._read_pool is not None:
            pool, self._read_pool = self._read_pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeouts.connect)
            except TimeoutError:  # a read still holds its connection: not waited for
                pool.terminate()


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """JSON and JSONB as SQLAlchemy's asyncpg dialect sets them on its connections: decoded with
    `json.loads`, parameters given as JSON text."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=str, decoder=json.loads, format="text")


async def _unchanged(conn: asyncpg.Connection) -> None:
    """The read pool's reset: nothing (see `Database.read_connection`)."""


def connect_options(url: str) -> dict[str, Any]:
    """asyncpg's connect keywords for a database URL, as SQLAlchemy's asyncpg dialect passes them
    (the URL's query, `?ssl=require` …, as keywords)."""
    target = asyncpg_url(url)
    return {**target.translate_connect_args(username="user"), **target.query}


def _engine(url: str, bounds: Bounds, connect: float, connections: int, pool_timeout: float) -> AsyncEngine:
    """An engine of at most `connections` connections, each kept once opened, which PostgreSQL
    holds to `bounds` (`server_settings`). None is an overflow connection, closed when given
    back: under load the pool's use swings around its size, and every swing would open one again
    (a connection, asyncpg's type introspection, five custom plans of each statement before a
    generic one), a third of the database's CPU per queue create at concurrency 32."""
    return create_async_engine(
        asyncpg_url(url),
        pool_size=connections,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=pool_timeout,
        connect_args={
            "timeout": connect,
            "command_timeout": bounds.client_timeout(),
            "server_settings": bounds.server_settings(),
        },
    )


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist (safe when replicas race)."""
    target = asyncpg_url(url)
    options = {**connect_options(url), "database": "postgres"}
    try:
        conn = await asyncpg.connect(**options)
    except Exception as exc:
        raise Unavailable(f"PostgreSQL is not reachable: {type(exc).__name__}") from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database)
        if not exists and target.database:
            try:
                quoted = target.database.replace('"', '""')  # an identifier: it cannot be a bound parameter
                await conn.execute(f'CREATE DATABASE "{quoted}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass
    finally:
        await conn.close()
