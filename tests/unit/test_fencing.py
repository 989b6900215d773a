"""Claim-mode fencing (docs/claims.md), without a database: who may change a leased run, and
from when a heartbeat renews its leases."""

from datetime import UTC, datetime, timedelta

import pytest

from handlers.worker_channel import sent_time
from schemas.common import StateType
from schemas.flow_runs import StateCreate
from services.flow_runs import LEASED, STALE_LEASE, fence

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = StateType


def leased(token: int = 7, expires: datetime | None = NOW + timedelta(seconds=10)) -> dict[str, object]:
    return {"lease_token": token, "lease_expires": expires}


UNLEASED = {"lease_token": None, "lease_expires": None}


@pytest.mark.parametrize(
    ("run", "token", "expected"),
    [
        (leased(), 7, None),  # the holder, lease live
        (leased(), 8, STALE_LEASE),  # another lease's token (the run was claimed again)
        (leased(expires=NOW), 7, STALE_LEASE),  # ends exactly now: no longer live
        (leased(expires=NOW - timedelta(seconds=1)), 7, STALE_LEASE),  # past its end, not yet swept
        (leased(expires=NOW + timedelta(microseconds=1)), 7, None),
        (UNLEASED, 7, STALE_LEASE),  # the lease was released (the run was put back or finished)
    ],
)
def test_a_token_is_honoured_only_while_its_lease_is_live(run, token, expected):
    for proposed in (T.PENDING, T.RUNNING, T.COMPLETED, T.SCHEDULED):
        assert fence(run, StateCreate(type=proposed), token, NOW) == expected


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        (T.PENDING, LEASED),
        (T.RUNNING, LEASED),
        (T.CANCELLING, None),
        (T.CANCELLED, None),
        (T.COMPLETED, None),
        (T.SCHEDULED, None),
    ],
)
def test_without_a_token_nobody_starts_a_leased_run(proposed, expected):
    assert fence(leased(), StateCreate(type=proposed), None, NOW) == expected
    # a lease past its end still holds the run until the sweep releases it
    assert fence(leased(expires=NOW - timedelta(minutes=5)), StateCreate(type=proposed), None, NOW) == expected


def test_an_unleased_run_is_not_fenced_without_a_token():
    for proposed in StateType:
        assert fence(UNLEASED, StateCreate(type=proposed), None, NOW) is None


@pytest.mark.parametrize(
    ("received_unix", "sent_at", "expected"),
    [
        (1_000.0, 999.75, NOW - timedelta(seconds=0.25)),  # 250 ms on its way
        (1_000.0, 976.0, NOW - timedelta(seconds=24)),  # held up 24 s: renews as if on time
        (1_000.0, 1_003.0, NOW),  # the sender's clock is ahead: no delay, never later than receipt
    ],
)
def test_a_heartbeat_is_dated_when_it_was_sent_on_the_replicas_clock(received_unix, sent_at, expected):
    assert sent_time(NOW, received_unix, sent_at) == expected
