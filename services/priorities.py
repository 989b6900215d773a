"""Queue priority rules (docs/priorities.md): unique, order-preserving, minimal changes, gaps never closed."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def first_free_priority(priorities: Sequence[int]) -> int:
    """The first position i (1-based) whose sorted value is not i; else max + 1."""
    for position, value in enumerate(sorted(priorities), start=1):
        if value != position:
            return position
    return len(priorities) + 1


def rebalance(queues: Sequence[tuple[Hashable, int]], target: Hashable | None) -> dict[Hashable, int]:
    """Re-insert `target` before the first other queue with priority >= its own, then push
    colliding queues down (+1, cascading). Returns only the queues whose priority changes.

    `queues` are (id, priority) with the target already carrying its new priority.
    """
    ordered = sorted(queues, key=lambda q: q[1])
    if target is not None:
        moved = next(q for q in ordered if q[0] == target)
        ordered.remove(moved)
        index = next((i for i, q in enumerate(ordered) if q[1] >= moved[1]), len(ordered))
        ordered.insert(index, moved)
    changes: dict[Hashable, int] = {}
    last = 0
    for queue_id, priority in ordered:
        if priority <= last:
            priority = last + 1
            changes[queue_id] = priority
        last = priority
    return changes
