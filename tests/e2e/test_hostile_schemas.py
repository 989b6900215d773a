"""Hostile job-template schemas over the wire: each answered 422 at once naming what is wrong,
nothing fetched, the pool not created, and the replica keeps serving (README "Limits")."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from client import InvalidRequest
from tests.factories import make_pool


def _template(variable: dict) -> dict:
    return {"job_configuration": {"command": "{{ x }}"}, "variables": {"properties": {"x": variable}}}


@pytest.fixture
def schema_server():
    """A local HTTP server that records every request it receives (it must receive none)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    thread.join(5)


async def test_hostile_schemas_are_refused_at_once_and_the_service_keeps_serving(client, schema_server):
    base, seen = schema_server
    attacks = {
        "catastrophic pattern": (
            {"type": "string", "pattern": "^(a+)+$", "default": "a" * 40 + "!"},
            "Validation failed for work pool's job variable defaults: Validation failed for field 'x'. "
            "Failure reason: '" + "a" * 40 + "!' does not match '^(a+)+$'",
        ),
        "http ref": (
            {"$ref": f"{base}/schema.json", "default": 1},
            f"Invalid schema at /properties/x: $ref '{base}/schema.json' points outside the schema; "
            "only references inside it (#/$defs/...) are allowed",
        ),
        "file ref": (
            {"$ref": "file:///dev/zero", "default": 1},
            "Invalid schema at /properties/x: $ref 'file:///dev/zero' points outside the schema; "
            "only references inside it (#/$defs/...) are allowed",
        ),
        "missing ref": (
            {"$ref": "#/definitions/nope", "default": 1},
            "Invalid schema at /properties/x: $ref '#/definitions/nope' points to nothing in the schema",
        ),
        "backreference": (
            {"type": "string", "pattern": "(a)\\1"},
            "Invalid schema at /properties/x/pattern: unsupported pattern '(a)\\\\1' (invalid escape sequence: "
            "\\1; patterns run on a linear-time engine: no backreferences or lookaround)",
        ),
    }
    for name, (variable, detail) in attacks.items():
        started = time.monotonic()
        with pytest.raises(InvalidRequest) as info:
            await client.create_work_pool(make_pool(name=name.replace(" ", "-"), base_job_template=_template(variable)))
        assert (info.value.status, info.value.detail) == (422, detail), name
        assert time.monotonic() - started < 2, name
    assert seen == []
    assert await client.count_work_pools() == 0
    pool = await client.create_work_pool(make_pool(name="still-serving"))
    with pytest.raises(InvalidRequest) as info:
        await client.update_work_pool(pool.name, {"base_job_template": _template({"$ref": f"{base}/s.json"})})
    assert info.value.status == 422
    assert info.value.detail.startswith("Invalid schema at /properties/x: $ref")
    assert (await client.read_work_pool(pool.name)).base_job_template == {}
    assert seen == []
