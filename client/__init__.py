"""Python clients of workpools (they import only `schemas`)."""

from client.errors import (
    ClientNotOpen,
    Forbidden,
    InvalidRequest,
    ObjectAlreadyExists,
    ObjectConflict,
    ObjectNotFound,
    RedisUnreachable,
    ServiceUnavailable,
    WorkPoolsError,
)
from client.work_pools import WorkPoolClient
from client.workers import WorkerClient

__all__ = [
    "ClientNotOpen",
    "Forbidden",
    "InvalidRequest",
    "ObjectAlreadyExists",
    "ObjectConflict",
    "ObjectNotFound",
    "RedisUnreachable",
    "ServiceUnavailable",
    "WorkPoolClient",
    "WorkerClient",
    "WorkPoolsError",
]
