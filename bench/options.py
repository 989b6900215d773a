"""The options every benchmark shares (Redis URL, keep the database, JSON output) and the
default URLs."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.housekeeping import check_bench_database

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workpools_bench"


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Add the options every benchmark has (Redis URL, keep the database, JSON output), parse,
    and refuse a database whose name does not say it is a benchmark's."""
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"default: {DEFAULT_REDIS_URL}")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        check_bench_database(args.database_url)
    except ValueError as exc:
        parser.error(str(exc))
    return args
