"""Every stream, channel and key name is built in one place, `schemas/channels.py`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "services", "handlers", "replica", "transport", "client", "cli", "tests")
BUILT_NAME = re.compile(r"""f["'][^"']*\{[\w.]*prefix\}\.\w|prefix \+ ["']\.\w""")
"""A name built by hand: an f-string `{prefix}.rpc…` or `{settings.prefix}.ready`, or `prefix + ".…"`."""


def test_names_are_built_only_in_channels():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "schemas" / "channels.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BUILT_NAME.search(line)
    ]
    assert found == []
