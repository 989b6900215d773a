"""Fixtures of the end-to-end tests that run the `workpools` command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas.settings import Settings
from tests.cli import command_env, serving_replica
from tests.replicas import Replica


@pytest.fixture(scope="module")
def cli_replica(redis_url: str, database_url: str) -> Iterator[tuple[Settings, Replica]]:
    """One `workpools serve` process for a whole test module (tests use unique names)."""
    with serving_replica(redis_url, database_url) as served:
        yield served


@pytest.fixture
def cli_env(cli_replica: tuple[Settings, Replica]) -> dict[str, str]:
    return command_env(cli_replica[0])


@pytest.fixture
def cli_settings(cli_replica: tuple[Settings, Replica]) -> Settings:
    return cli_replica[0]
