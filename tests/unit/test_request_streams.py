"""How a replica's subscribers read their request streams (`transport.streams`)."""

import copy

from schemas.channels import Channels, Op
from schemas.settings import Settings
from transport.streams import IDLE_BLOCK_MS, ShallowStreamSub, request_stream


def test_a_request_stream_is_read_by_the_group_in_batches():
    settings = Settings(prefix="wp", consumer_name="replica-1", rpc_concurrency=16)
    sub = request_stream(Channels("wp"), Op.READ_WORK_POOL, settings)
    assert isinstance(sub, ShallowStreamSub)
    assert (sub.name, sub.group, sub.consumer, sub.max_records, sub.polling_interval) == (
        Channels("wp").rpc(Op.READ_WORK_POOL),
        Channels("wp").rpc_group,
        "replica-1",
        16,
        IDLE_BLOCK_MS,
    )


def test_no_prefix_is_no_copy_and_a_prefix_leaves_the_original_alone():
    sub = ShallowStreamSub("wp.rpc.read_work_pool", group="g", consumer="c", max_records=8)
    assert sub.add_prefix("") is sub

    prefixed = sub.add_prefix("other.")
    assert prefixed is not sub
    assert (prefixed.name, prefixed.group, prefixed.consumer, prefixed.max_records) == (
        "other.wp.rpc.read_work_pool",
        "g",
        "c",
        8,
    )
    assert sub.name == "wp.rpc.read_work_pool"

    copied = copy.deepcopy(sub)
    assert copied is not sub and (copied.name, copied.group) == (sub.name, sub.group)
