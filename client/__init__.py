"""Python clients of workpools (they import only `schemas`)."""

from client.errors import (
    Forbidden,
    InvalidRequest,
    ObjectAlreadyExists,
    ObjectConflict,
    ObjectNotFound,
    ServiceUnavailable,
    WorkPoolsError,
)
from client.work_pools import WorkPoolClient
from client.workers import WorkerClient

__all__ = [
    "Forbidden",
    "InvalidRequest",
    "ObjectAlreadyExists",
    "ObjectConflict",
    "ObjectNotFound",
    "ServiceUnavailable",
    "WorkPoolClient",
    "WorkerClient",
    "WorkPoolsError",
]
