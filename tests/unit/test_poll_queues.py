"""Which queues a poll looks at (docs/poll.md), without a database: Prefect's worked example of a
pool A with queues default, AA, AB, AC."""

from uuid import uuid4

import pytest

from services.errors import NotFound
from services.scheduling import polled_queue_ids

POOL_A = {name: uuid4() for name in ("default", "AA", "AB", "AC")}


@pytest.mark.parametrize("names", [None, []])
def test_no_names_polls_every_queue(names):
    assert polled_queue_ids("A", POOL_A, names) == (None, list(POOL_A.values()))


@pytest.mark.parametrize(
    "names",
    [["AA"], ["AA", "AB"], ["AC", "default"]],
)
def test_names_select_those_queues(names):
    ids = [POOL_A[name] for name in names]
    assert polled_queue_ids("A", POOL_A, names) == (ids, ids)


def test_a_name_the_pool_does_not_have_is_404():
    with pytest.raises(NotFound) as raised:
        polled_queue_ids("A", POOL_A, ["AA", "BA"])  # BA is a queue of pool B
    assert (raised.value.status, raised.value.detail) == (404, "Work pool queue 'A/BA' not found.")
