"""The operation table and its handlers: every operation declared once, served once."""

from __future__ import annotations

import types

import pytest

from handlers.operations import HANDLERS, IN_ONE, MODULES, collect, collect_in_one
from handlers.rpc import Deps, handles, in_one_statement
from schemas.channels import Op
from schemas.operations import OPERATIONS, Operation, _index
from schemas.scheduling import GetScheduledFlowRuns
from schemas.work_pools import ReadWorkPool, WorkPool
from services.idempotency import Logged


def test_every_operation_has_one_row_and_one_handler_taking_its_request():
    assert list(OPERATIONS) == list(Op)
    assert set(HANDLERS) == set(Op)
    assert HANDLERS[Op.READ_WORK_POOL].__name__ == "read_work_pool"


def test_a_claim_poll_writes_and_a_plain_poll_reads():
    poll = OPERATIONS[Op.GET_SCHEDULED_FLOW_RUNS]
    assert poll.is_write(GetScheduledFlowRuns(work_pool_name="p", claim=True, worker_name="w")) is True
    assert poll.is_write(GetScheduledFlowRuns(work_pool_name="p")) is False
    writes = {op for op, row in OPERATIONS.items() if row.writes is True}
    assert writes == {
        Op.CREATE_WORK_POOL, Op.UPDATE_WORK_POOL, Op.DELETE_WORK_POOL,
        Op.CREATE_WORK_QUEUE, Op.UPDATE_WORK_QUEUE, Op.DELETE_WORK_QUEUE,
        Op.DELETE_WORKER, Op.CREATE_DEPLOYMENT, Op.CREATE_FLOW_RUN, Op.SET_FLOW_RUN_STATE,
    }  # fmt: skip


def test_a_reply_is_parsed_as_the_rows_reply_type():
    assert OPERATIONS[Op.COUNT_WORK_POOLS].parse_reply(3) == 3
    assert OPERATIONS[Op.DELETE_WORK_POOL].parse_reply(None) is None
    with pytest.raises(ValueError, match="validation error"):
        OPERATIONS[Op.READ_WORK_POOL].parse_reply({"name": "only"})


def _module(name: str, **handlers) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, handler in handlers.items():
        handler.__module__ = name
        setattr(module, attr, handler)
    return module


async def read_pool(deps: Deps, body: ReadWorkPool) -> WorkPool:
    raise NotImplementedError


async def read_pool_wrongly(deps: Deps, body: WorkPool) -> WorkPool:
    raise NotImplementedError


def test_a_second_handler_a_mistyped_one_or_a_missing_one_fails():
    twice = _module("twice", a=handles(Op.READ_WORK_POOL)(read_pool))
    with pytest.raises(LookupError, match="read_work_pool has two handlers"):
        collect((*MODULES, twice))
    mistyped = _module("mistyped", a=handles(Op.READ_WORK_POOL)(read_pool_wrongly))
    with pytest.raises(TypeError, match="the handler of read_work_pool takes"):
        collect((mistyped,))
    with pytest.raises(LookupError, match="operations without a handler"):
        collect(MODULES[:1])


def test_a_row_declared_twice_or_missing_fails():
    rows = tuple(OPERATIONS.values())
    with pytest.raises(ValueError, match="read_work_pool is declared twice"):
        _index((*rows, OPERATIONS[Op.READ_WORK_POOL]))
    with pytest.raises(ValueError, match="operations without a row"):
        _index(rows[1:])
    assert isinstance(rows[0], Operation)


async def create_queue_in_one(deps: Deps, body: object, logged: Logged) -> bytes | None:
    raise NotImplementedError


async def read_pool_in_one(deps: Deps, body: object, logged: Logged) -> bytes | None:
    raise NotImplementedError


def test_only_a_write_has_a_one_statement_form_and_only_one():
    assert set(IN_ONE) == {Op.CREATE_WORK_QUEUE}
    twice = _module("twice_in_one", a=in_one_statement(Op.CREATE_WORK_QUEUE)(create_queue_in_one))
    with pytest.raises(LookupError, match="create_work_queue has two one-statement forms"):
        collect_in_one((*MODULES, twice))
    read = _module("read_in_one", a=in_one_statement(Op.READ_WORK_POOL)(read_pool_in_one))
    with pytest.raises(TypeError, match="read_work_pool does not write"):
        collect_in_one((read,))
