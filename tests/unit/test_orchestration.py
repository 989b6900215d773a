"""Orchestration rules of a proposed flow-run state (docs/orchestration.md), without a database:
`judge` decides ACCEPT / REJECT / ABORT on the current row; `state_of` reads a row's state."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from schemas.common import StateType
from schemas.flow_runs import SetStateStatus, StateCreate
from services.flow_runs import judge, state_of

ACCEPT, REJECT, ABORT = SetStateStatus.ACCEPT, SetStateStatus.REJECT, SetStateStatus.ABORT
T = StateType


def run(state: StateType, *, deployment: bool = True) -> dict[str, object]:
    return {"state_type": state.value, "deployment_id": uuid4() if deployment else None}


@pytest.mark.parametrize(
    ("current", "proposed", "expected"),
    [
        # the worker's compare-and-set: only a SCHEDULED run becomes PENDING
        (T.SCHEDULED, T.PENDING, (ACCEPT, None, T.PENDING)),
        (
            T.PENDING,
            T.PENDING,
            (ABORT, "This run is in a PENDING state and cannot transition to a PENDING state.", None),
        ),
        (
            T.RUNNING,
            T.PENDING,
            (ABORT, "This run is in a RUNNING state and cannot transition to a PENDING state.", None),
        ),
        (
            T.CANCELLING,
            T.PENDING,
            (ABORT, "This run is in a CANCELLING state and cannot transition to a PENDING state.", None),
        ),
        (
            T.CANCELLED,
            T.PENDING,
            (ABORT, "This run is in a CANCELLED state and cannot transition to a PENDING state.", None),
        ),
        (T.PENDING, T.RUNNING, (ACCEPT, None, T.RUNNING)),
        (T.RUNNING, T.COMPLETED, (ACCEPT, None, T.COMPLETED)),
        (T.RUNNING, T.FAILED, (ACCEPT, None, T.FAILED)),
        # a terminal run cannot be cancelled, paused or crashed again
        (T.COMPLETED, T.CANCELLING, (ABORT, "Run is already in terminal state COMPLETED.", None)),
        (T.FAILED, T.PAUSED, (ABORT, "Run is already in terminal state FAILED.", None)),
        (T.CANCELLED, T.CRASHED, (ABORT, "Run is already in terminal state CANCELLED.", None)),
        (T.CRASHED, T.CANCELLING, (ABORT, "Run is already in terminal state CRASHED.", None)),
        # but a run of a deployment can be rescheduled (a retry)
        (T.FAILED, T.SCHEDULED, (ACCEPT, None, T.SCHEDULED)),
        # a SCHEDULED run has nothing to terminate: cancelling it cancels it at once
        (
            T.SCHEDULED,
            T.CANCELLING,
            (REJECT, "Scheduled flow run has no infrastructure to terminate.", T.CANCELLED),
        ),
        (T.RUNNING, T.CANCELLING, (ACCEPT, None, T.CANCELLING)),
        (T.CANCELLING, T.CANCELLED, (ACCEPT, None, T.CANCELLED)),
        (T.SCHEDULED, T.SCHEDULED, (ACCEPT, None, T.SCHEDULED)),
    ],
)
def test_judge(current, proposed, expected):
    assert judge(run(current), StateCreate(type=proposed)) == expected


def test_a_run_without_a_deployment_cannot_be_rescheduled_from_a_terminal_state():
    for current in (T.COMPLETED, T.FAILED, T.CANCELLED, T.CRASHED):
        assert judge(run(current, deployment=False), StateCreate(type=T.SCHEDULED)) == (
            ABORT,
            "Cannot reschedule a run without an associated deployment.",
            None,
        )
    assert judge(run(T.RUNNING, deployment=False), StateCreate(type=T.SCHEDULED)) == (ACCEPT, None, T.SCHEDULED)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (T.SCHEDULED, (ACCEPT, None, T.SCHEDULED)),
        (T.PENDING, (REJECT, "Only scheduled flows can be marked late.", None)),
        (T.RUNNING, (REJECT, "Only scheduled flows can be marked late.", None)),
        (T.COMPLETED, (REJECT, "Only scheduled flows can be marked late.", None)),
    ],
)
def test_only_a_scheduled_run_can_be_marked_late(current, expected):
    assert judge(run(current), StateCreate(type=T.SCHEDULED, name="Late")) == expected


def test_state_of_a_row():
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    due = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    row = {
        "state_id": uuid4(),
        "state_type": "SCHEDULED",
        "state_name": "Late",
        "state_timestamp": at,
        "state_message": "behind",
        "next_scheduled_start_time": due,
    }
    state = state_of(row)
    assert (state.id, state.type, state.name, state.timestamp, state.message) == (
        row["state_id"],
        T.SCHEDULED,
        "Late",
        at,
        "behind",
    )
    assert state.state_details.scheduled_time == due
    # only a SCHEDULED state carries its scheduled time
    assert state_of({**row, "state_type": "RUNNING", "state_name": "Running"}).state_details.scheduled_time is None
