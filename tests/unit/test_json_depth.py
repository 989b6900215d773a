"""The one nesting limit: measured iteratively, the place named, worker messages held to it."""

import pytest
from pydantic import ValidationError

from schemas.common import MAX_JSON_DEPTH, json_depth_error, json_too_deep
from schemas.worker_channel import HeartbeatMessage, PollMessage


def nest(levels, leaf=1, key="a"):
    value = leaf
    for _ in range(levels):
        value = {key: value}
    return value


def test_depth_counts_the_value_itself_as_level_one():
    assert MAX_JSON_DEPTH == 64
    assert json_too_deep(nest(64)) is None
    assert json_too_deep(nest(65)) == "/".join(["a"] * 64)
    assert json_too_deep(nest(2), limit=1) == "a"
    assert json_too_deep([[[]]], limit=2) == "0/0"
    assert json_too_deep({"x": [1, "s", {"y": []}]}, limit=3) == "x/2/y"
    assert json_too_deep("text") is None and json_too_deep(None) is None


def test_far_deeper_than_python_recursion_is_measured():
    assert json_too_deep(nest(200_000)) == "/".join(["a"] * 64)


def test_the_error_names_the_place_like_a_validation_error():
    assert json_depth_error({"parameters": nest(64)}) == {
        "type": "json_too_deep",
        "loc": ["body"],
        "msg": "JSON nests deeper than 64 levels (at parameters" + "/a" * 63 + ")",
    }
    assert json_depth_error({"parameters": nest(63)}) is None


@pytest.mark.parametrize("model", [HeartbeatMessage, PollMessage])
def test_worker_messages_are_held_to_the_limit_before_anything_else(model):
    with pytest.raises(ValidationError) as info:
        model.model_validate({"work_pool_name": nest(70)})
    assert [(e["type"], e["msg"]) for e in info.value.errors()] == [
        ("json_too_deep", "JSON nests deeper than 64 levels (at work_pool_name" + "/a" * 63 + ")")
    ]
