"""Queue priority rules of docs/priorities.md: first free position on create, minimal push-down re-balance."""

import pytest

from services.priorities import first_free_priority, rebalance


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], 1),
        ([1], 2),
        ([1, 2, 3], 4),
        ([1, 99], 2),
        ([2, 3], 1),
        ([3, 1, 2], 4),
        ([1, 2, 4, 5], 3),
        ([5], 1),
    ],
)
def test_first_free_priority(existing, expected):
    assert first_free_priority(existing) == expected


def _apply(queues: dict[str, int], target: str | None) -> dict[str, int]:
    """Run the re-balance and return every queue's resulting priority."""
    changes = rebalance(list(queues.items()), target)
    return {name: changes.get(name, priority) for name, priority in queues.items()}


def test_create_with_priority_pushes_the_colliding_queues_down():
    # default:1, A:2, B:3; create C with priority 2 -> default:1, C:2, A:3, B:4
    queues = {"default": 1, "A": 2, "B": 3, "C": 2}
    assert rebalance(list(queues.items()), "C") == {"A": 3, "B": 4}
    assert _apply(queues, "C") == {"default": 1, "A": 3, "B": 4, "C": 2}


def test_create_with_priority_one_moves_the_default_queue():
    # default:1, A:2; create B with 1 -> B:1, default:2, A:3
    assert _apply({"default": 1, "A": 2, "B": 1}, "B") == {"default": 2, "A": 3, "B": 1}


def test_moving_the_first_queue_down_leaves_a_gap_and_cascades():
    # A:1, B:2, C:3, D:4, E:5; set A -> 2 -> A:2, B:3, C:4, D:5, E:6
    queues = {"A": 2, "B": 2, "C": 3, "D": 4, "E": 5}
    assert rebalance(list(queues.items()), "A") == {"B": 3, "C": 4, "D": 5, "E": 6}


def test_moving_a_queue_behind_another_only_pushes_the_one_it_lands_on():
    # X:1, a:2, b:3; set X -> 3 -> a:2, X:3, b:4
    assert _apply({"X": 3, "a": 2, "b": 3}, "X") == {"X": 3, "a": 2, "b": 4}
    # the result does not depend on the order the rows come in
    assert _apply({"b": 3, "a": 2, "X": 3}, "X") == {"X": 3, "a": 2, "b": 4}


def test_a_priority_beyond_every_other_stays_as_given():
    assert rebalance([("default", 1), ("A", 2), ("B", 3), ("C", 4), ("N", 99)], "N") == {}
    assert first_free_priority([1, 2, 3, 4, 99]) == 5


def test_a_gap_before_the_target_is_kept():
    # default:1, A:5; set A -> 3: nothing collides, nothing moves (gaps are never closed)
    assert rebalance([("default", 1), ("A", 3)], "A") == {}


def test_rebalance_without_target_never_closes_gaps():
    # delete B from default:1, A:2, B:3, C:4 -> default:1, A:2, C:4
    assert rebalance([("default", 1), ("A", 2), ("C", 4)], None) == {}


def test_rebalance_without_target_repairs_duplicates():
    # two racing creates got the same priority; a re-balance pushes one of them down
    assert rebalance([("default", 1), ("A", 2), ("B", 2), ("C", 3)], None) == {"B": 3, "C": 4}


def test_rebalance_reports_only_queues_that_change():
    assert rebalance([("default", 1), ("A", 2), ("B", 3)], "B") == {}
    assert rebalance([("default", 1)], "default") == {}
