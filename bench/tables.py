"""Printing results: a table (Rich when installed), numbers, and the CPU table every benchmark
shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.cpu import CpuMeter


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    right_align: Sequence[str] = (),
    caption: str | None = None,
) -> None:
    """A Rich table when Rich is installed, otherwise plain aligned text."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        Console = None  # type: ignore[assignment]
    if Console is not None:
        table = Table(title=title, caption=caption, caption_justify="left")
        for col in columns:
            table.add_column(col, justify="right" if col in right_align else "left")
        for row in cells:
            table.add_row(*(Text(v) for v in row))  # literal text: "[kernel.kallsyms]" is not markup
        Console(width=max(300, Console().width)).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if col in right_align else v.ljust(w) for v, w, col in zip(values, widths, columns, strict=True)
        )

    print(title)
    print(line(columns))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    if caption:
        print(caption)


def fmt_float(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


CPU_PARTS = ("machine", "replicas", "client", "redis", "postgres", "other")


def print_cpu_table(
    title: str, rows: Sequence[tuple[str, int, int, CpuMeter, int]], *, unit: str = "op", caption: str | None = None
) -> None:
    """rows: (operation, concurrency, replicas, meter, ops). CPU % of one core during the
    measured window, and CPU ms per op per process (the robust number on a shared machine)."""
    per = [f"ms/{unit} {k}" for k in ("repl.", "client", "redis", "pg")]
    print_table(
        title,
        ["operation", "conc.", "repl.", *CPU_PARTS, *per],
        [
            [
                label,
                conc,
                repl,
                *(fmt_float(meter.percent().get(k, math.nan), 0) for k in CPU_PARTS),
                *(
                    fmt_float(meter.ms_per_op(ops).get(k, math.nan), 3)
                    for k in ("replicas", "client", "redis", "postgres")
                ),
            ]
            for label, conc, repl, meter, ops in rows
        ],
        right_align=["conc.", "repl.", *CPU_PARTS, *per],
        caption=caption
        or "CPU % of one core (200 % = both cores busy). postgres = the benchmark database's "
        "backends. other = the rest of the machine (other sessions, their "
        "databases; backends that exited during the window): a noisy neighbour if not ~0; per-op "
        "CPU is the robust number.",
    )
