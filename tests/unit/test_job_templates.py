"""Prefect's base_job_template rules: structure and filling (schemas), defaults (services)."""

import http.server
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from schemas.job_templates import fill_template, placeholders, validate_base_job_template
from services.job_templates import JobVariableDefaultsError, validate_job_variable_defaults
from services.safe_schemas import MAX_VALIDATION_CPU_SECONDS
from tests.hostile_schemas import variables_schemas

MISSING_KEYS = "The `base_job_template` must contain both a `job_configuration` key and a `variables` key."
UNDECLARED = (
    "The variables specified in the job configuration template must be present as properties "
    "in the variables schema. Your job configuration uses the following undeclared variable(s): "
)
DEFAULTS = "Validation failed for work pool's job variable defaults: "
BLOCK_REF = {"$ref": {"block_document_id": "2fdfbc57-3d0b-4b0b-9a3b-9d3f2c1e5a77"}}


def _template(job_configuration, properties):
    return {"job_configuration": job_configuration, "variables": {"properties": properties}}


def _raises_value_error(template, message):
    with pytest.raises(ValueError) as info:
        validate_base_job_template(template)
    assert str(info.value) == message


def _raises_defaults_error(template, message):
    with pytest.raises(JobVariableDefaultsError) as info:
        validate_job_variable_defaults(template)
    assert str(info.value) == message


# --- placeholders -----------------------------------------------------------------------------


def test_placeholders_whitespace_variants_and_special_characters():
    assert placeholders("{{x}}") == {"x"}
    assert placeholders("{{  x  }}") == {"x"}
    assert placeholders("{{ a }}.{{b}}") == {"a", "b"}
    assert placeholders("{{ $ENV }} {{ prefect.variables.x }} {{ a-b }} {{ c[0] }}") == {
        "$ENV",
        "prefect.variables.x",
        "a-b",
        "c[0]",
    }
    assert placeholders("{{ naïve_1 }}") == {"naïve_1"}


def test_placeholders_nested_and_non_matches():
    value = {"a": ["{{ x }}", {"b": "pre {{y}} post"}], "c": 3, "d": None, "e": "{{ }}"}
    assert placeholders(value) == {"x", "y"}
    assert placeholders("{{ a b }}") == set()
    assert placeholders("{ x }") == set()
    assert placeholders(42) == set()


# --- validate_base_job_template ---------------------------------------------------------------


def test_empty_template_is_valid():
    assert validate_base_job_template({}) is None


def test_valid_template_with_declared_placeholders():
    template = _template(
        {"command": "{{ command }}", "env": {"A": "{{env}}"}, "args": ["--x", "{{  image  }}"]},
        {"command": {"type": "string"}, "env": {"type": "object"}, "image": {"type": "string"}},
    )
    assert validate_base_job_template(template) is None


def test_template_without_placeholders_is_valid():
    assert validate_base_job_template(_template({"command": "echo hi"}, {"x": {}})) is None


@pytest.mark.parametrize(
    "template",
    [
        {"job_configuration": {"command": "x"}},
        {"variables": {"properties": {"x": {}}}},
        {"job_configuration": {}, "variables": {}},
        {"job_configuration": {"command": "x"}, "variables": {}},
        {"job_configuration": {}, "variables": {"properties": {}}},
        {"other": 1},
    ],
)
def test_missing_or_empty_keys(template):
    _raises_value_error(template, MISSING_KEYS)


@pytest.mark.parametrize("template", [None, [], "x", 3])
def test_non_dict_template(template):
    _raises_value_error(template, "The `base_job_template` must be a JSON object.")


def test_undeclared_single_variable():
    template = _template({"command": "{{ command }}"}, {"image": {"type": "string"}})
    _raises_value_error(template, UNDECLARED + "command.")


def test_undeclared_variables_are_sorted_deduplicated_and_joined_with_space_comma():
    template = _template(
        {"b": "{{ zeta }}", "a": ["{{alpha}}", {"deep": "x {{ zeta }} y {{ alpha }}"}]},
        {"image": {"type": "string"}},
    )
    _raises_value_error(template, UNDECLARED + "alpha ,zeta.")


def test_undeclared_nested_in_lists_and_dicts():
    template = _template({"spec": {"containers": [{"env": ["{{ inner }}"]}]}}, {"x": {}})
    _raises_value_error(template, UNDECLARED + "inner.")


def test_missing_properties_treated_as_empty():
    template = {"job_configuration": {"c": "{{ c }}"}, "variables": {"type": "object"}}
    _raises_value_error(template, UNDECLARED + "c.")


def test_special_names_must_be_declared_too():
    template = _template(
        {"a": "{{ prefect.variables.x }}", "b": "{{ $ENV }}", "c": "{{ a-b }}", "d": "{{ c[0] }}"},
        {"x": {}},
    )
    _raises_value_error(template, UNDECLARED + "$ENV ,a-b ,c[0] ,prefect.variables.x.")
    declared = {"prefect.variables.x": {}, "$ENV": {}, "a-b": {}, "c[0]": {}}
    template["variables"]["properties"] = declared
    assert validate_base_job_template(template) is None


# --- validate_job_variable_defaults -----------------------------------------------------------


def test_defaults_skipped_for_empty_template_or_variables():
    assert validate_job_variable_defaults({}) is None
    assert validate_job_variable_defaults({"job_configuration": {"a": 1}}) is None
    assert validate_job_variable_defaults({"job_configuration": {"a": 1}, "variables": {}}) is None


def test_defaults_error_is_a_value_error():
    assert issubclass(JobVariableDefaultsError, ValueError)


def test_invalid_schema():
    template = {"variables": {"type": "object", "properties": {"x": {"type": "nope"}}}}
    _raises_defaults_error(template, "Invalid schema: 'nope' is not valid under any of the given schemas")


def test_valid_defaults_pass():
    template = _template(
        {"command": "{{ command }}"},
        {
            "command": {"type": "string", "default": "echo hi"},
            "cpu": {"type": "integer", "default": 2, "minimum": 1},
            "env": {"type": "object", "default": {"A": "1"}, "additionalProperties": {"type": "string"}},
            "no_default": {"type": "string"},
        },
    )
    assert validate_job_variable_defaults(template) is None


def test_prefect_example_failure():
    template = {"variables": {"properties": {"foo": {"type": "string", "default": {"foo": "bar"}}}}}
    message = (
        DEFAULTS + "Validation failed for field 'foo'. Failure reason: {'foo': 'bar'} is not of type 'string', 'null'"
    )
    _raises_defaults_error(template, message)
    # Prefect's own test asserts this fragment as a substring.
    assert "Validation failed for field 'foo'. Failure reason: {'foo': 'bar'} is not of type 'string'" in message


def test_nested_path_failure_joined_with_dots():
    template = {
        "variables": {
            "properties": {
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "default": {"FOO": 1},
                }
            }
        }
    }
    _raises_defaults_error(
        template,
        DEFAULTS + "Validation failed for field 'env.FOO'. Failure reason: 1 is not of type 'string'",
    )


def test_root_path_failure():
    template = {
        "variables": {
            "maxProperties": 1,
            "properties": {"a": {"type": "integer", "default": 1}, "b": {"type": "integer", "default": 2}},
        }
    }
    _raises_defaults_error(
        template, DEFAULTS + "Validation failed. Failure reason: {'a': 1, 'b': 2} has too many properties"
    )


def test_block_reference_defaults_are_skipped():
    template = {"variables": {"properties": {"creds": {"type": "string", "default": BLOCK_REF}}}}
    assert validate_job_variable_defaults(template) is None


def test_malformed_block_reference_is_validated():
    bad = {"$ref": {"block_document_id": "not-a-uuid"}}
    template = {"variables": {"properties": {"creds": {"type": "string", "default": bad}}}}
    _raises_defaults_error(
        template,
        DEFAULTS + "Validation failed for field 'creds'. "
        "Failure reason: {'$ref': {'block_document_id': 'not-a-uuid'}} is not of type 'string', 'null'",
    )


def test_required_is_removed_everywhere():
    template = {
        "variables": {
            "required": ["image", "missing"],
            "properties": {
                "image": {"type": "string"},
                "job": {"$ref": "#/definitions/Job", "default": {"name": "x"}},
                "spec": {"$ref": "#/$defs/Spec", "default": {}},
            },
            "definitions": {
                "Job": {"type": "object", "required": ["name", "other"], "properties": {"name": {"type": "string"}}}
            },
            "$defs": {"Spec": {"type": "object", "required": ["replicas"]}},
        }
    }
    assert validate_job_variable_defaults(template) is None


def test_null_widening():
    template = {
        "variables": {
            "required": ["cpu"],
            "properties": {
                "cpu": {"type": "integer", "default": None},
                "mem": {"type": ["integer", "string"], "default": None},
                "nothing": {"type": "null", "default": None},
                "nested": {
                    "type": "object",
                    "properties": {"inner": {"type": "boolean"}},
                    "default": {"inner": None},
                },
            },
        }
    }
    assert validate_job_variable_defaults(template) is None


def test_null_widening_does_not_accept_other_wrong_types():
    template = {"variables": {"properties": {"cpu": {"type": ["integer"], "default": "x"}}}}
    _raises_defaults_error(
        template,
        DEFAULTS + "Validation failed for field 'cpu'. Failure reason: 'x' is not of type 'integer', 'null'",
    )


def test_defaults_validation_does_not_mutate_template():
    variables = {"required": ["a"], "properties": {"a": {"type": "string", "default": "x"}}}
    validate_job_variable_defaults({"variables": variables})
    assert variables == {"required": ["a"], "properties": {"a": {"type": "string", "default": "x"}}}


# --- fill_template ----------------------------------------------------------------------------


def test_fill_whole_placeholder_keeps_raw_value():
    config = {"cpu": "{{ cpu }}", "env": "{{env}}", "flag": "{{ flag }}", "missing": "{{ nope }}"}
    values = {"cpu": 2, "env": {"A": "1"}, "flag": False}
    assert fill_template(config, values) == {"cpu": 2, "env": {"A": "1"}, "flag": False, "missing": None}


def test_fill_embedded_placeholders_use_str():
    config = {"command": "run {{ cpu }} on {{image}} {{ missing }}!", "n": "{{ none }}-x"}
    filled = fill_template(config, {"cpu": 2, "image": "py:3", "none": None})
    assert filled == {"command": "run 2 on py:3 !", "n": "-x"}


def test_fill_nested_and_returns_deep_copy():
    shared = {"A": "1"}
    config = {"spec": {"containers": [{"image": "{{ image }}", "env": "{{ env }}"}]}, "plain": [1, "x"]}
    filled = fill_template(config, {"image": "py", "env": shared})
    assert filled == {"spec": {"containers": [{"image": "py", "env": {"A": "1"}}]}, "plain": [1, "x"]}
    filled["plain"].append(2)
    filled["spec"]["containers"][0]["env"]["B"] = "2"
    assert config["plain"] == [1, "x"]
    assert config["spec"]["containers"][0] == {"image": "{{ image }}", "env": "{{ env }}"}
    assert shared == {"A": "1"}


def test_fill_without_placeholders_is_identity_copy():
    config = {"a": 1, "b": None, "c": "text"}
    filled = fill_template(config, {})
    assert filled == config and filled is not config


# --- hostile variables schemas (services/safe_schemas.py) --------------------------------------


def _variables(properties, **extra):
    return {"variables": {"properties": properties, **extra}}


def _refused(template) -> str:
    with pytest.raises(JobVariableDefaultsError) as info:
        validate_job_variable_defaults(template)
    return str(info.value)


QUICK_MS = 40
"""CPU (ms) within which an attack is refused, or a schema at the limits validated, on a slow
machine too (this machine kind runs up to 4x slower at times); unguarded, these took seconds to
hours."""


def _cpu_ms(template) -> float:
    """The least CPU time (ms) of three validations, refused or not."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        try:
            validate_job_variable_defaults(template)
        except JobVariableDefaultsError:
            pass
        best = min(best, (time.thread_time() - started) * 1000)
    return best


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        self.requests.append(self.path)
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_schema_server():
    _RecordingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingHandler.requests
    server.shutdown()
    thread.join(5)


def test_catastrophic_pattern_runs_in_linear_time():
    template = _variables({"x": {"type": "string", "pattern": "^(a+)+$", "default": "a" * 40 + "!"}})
    assert _refused(template) == (
        DEFAULTS + "Validation failed for field 'x'. Failure reason: '" + "a" * 40 + "!' does not match '^(a+)+$'"
    )
    assert _cpu_ms(template) < QUICK_MS
    long_input = _variables({"x": {"type": "string", "pattern": "^(a+)+$", "default": "a" * 60_000 + "!"}})
    assert _cpu_ms(long_input) < QUICK_MS
    assert validate_job_variable_defaults(_variables({"x": {"pattern": "^(a+)+$", "default": "aaaa"}})) is None


def test_patterns_in_pattern_properties_and_additional_properties_use_the_same_engine():
    schema = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False}
    assert validate_job_variable_defaults(_variables({"x": {**schema, "default": {"aaa": 1}}})) is None
    assert _refused(_variables({"x": {**schema, "default": {"a" * 40 + "!": 1}}})) == (
        DEFAULTS + "Validation failed for field 'x'. Failure reason: '" + "a" * 40 + "!' does not match any of the "
        "regexes: '^(a+)+$'"
    )
    assert _refused(_variables({"x": {**schema, "default": {"aa": "no"}}})) == (
        DEFAULTS + "Validation failed for field 'x.aa'. Failure reason: 'no' is not of type 'integer'"
    )


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "invalid escape sequence: \\1"),
        ("(?=a)b", "invalid perl operator: (?="),
        ("(", "missing ): ("),
    ],
)
def test_patterns_the_linear_engine_cannot_run_are_refused(pattern, reason):
    message = _refused(_variables({"x": {"type": "string", "pattern": pattern}}))
    assert message == (
        f"Invalid schema at /properties/x/pattern: unsupported pattern {pattern!r} ({reason}; patterns run on a "
        "linear-time engine: no backreferences or lookaround)"
    )
    message = _refused(_variables({"x": {"type": "object", "patternProperties": {pattern: {}}}}))
    assert message.startswith(f"Invalid schema at /properties/x/patternProperties: unsupported pattern {pattern!r}")


def test_remote_references_are_never_retrieved(http_schema_server):
    base, requests = http_schema_server
    for ref in (f"{base}/schema.json", f"{base}/schema.json#/definitions/x", "//127.0.0.1/x"):
        message = _refused(_variables({"x": {"$ref": ref, "default": 1}}))
        assert message == (
            f"Invalid schema at /properties/x: $ref {ref!r} points outside the schema; only references inside it "
            "(#/$defs/...) are allowed"
        )
    # not even through a base URI or at the top
    assert _refused({"variables": {"$id": f"{base}/", "properties": {"x": {"$ref": "s.json"}}}}) == (
        "Invalid schema at /: schema identifiers ($id) are not supported; use references inside the schema "
        "(#/$defs/...)"
    )
    assert _refused({"variables": {"$ref": f"{base}/schema.json"}}).startswith("Invalid schema at /: $ref")
    assert requests == []


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "file:///dev/zero", "/etc/passwd", "other.json#/a"])
def test_file_and_relative_references_are_refused(ref):
    message = _refused(_variables({"x": {"$ref": ref, "default": 1}}))
    assert message == (
        f"Invalid schema at /properties/x: $ref {ref!r} points outside the schema; only references inside it "
        "(#/$defs/...) are allowed"
    )
    assert "root:" not in message


def test_local_references_work_in_defs_and_definitions():
    template = {
        "variables": {
            "$defs": {"Cpu": {"type": "integer", "minimum": 1}},
            "definitions": {"Env": {"type": "object", "additionalProperties": {"type": "string"}}},
            "properties": {
                "cpu": {"$ref": "#/$defs/Cpu", "default": 2},
                "env": {"$ref": "#/definitions/Env", "default": {"A": "1"}},
                "both": {"allOf": [{"$ref": "#/$defs/Cpu"}, {"$ref": "#/properties/cpu"}], "default": 3},
            },
        }
    }
    assert validate_job_variable_defaults(template) is None
    template["variables"]["properties"]["cpu"]["default"] = 0
    assert _refused(template) == (
        DEFAULTS + "Validation failed for field 'cpu'. Failure reason: 0 is less than the minimum of 1"
    )


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("#/definitions/nope", "points to nothing in the schema"),
        ("#/$defs/a/b/c", "points to nothing in the schema"),
        ("#/properties/x/default", "does not point to a schema"),
        ("#/required", "does not point to a schema"),
        ("#anchor", "is not a JSON pointer (#/$defs/...)"),
    ],
)
def test_missing_and_non_schema_references_are_422(ref, reason):
    template = {"variables": {"required": ["x"], "properties": {"x": {"$ref": ref, "default": {"a": 1}}}}}
    assert _refused(template) == f"Invalid schema at /properties/x: $ref {ref!r} {reason}"


def test_recursive_references_are_refused():
    assert _refused(_variables({"x": {"$ref": "#", "default": 1}})) == (
        "Invalid schema at /: recursive $ref (a reference back into itself) is not supported"
    )
    cycle = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"items": {"$ref": "#/$defs/a"}}}}
    assert _refused({"variables": {**cycle, "properties": {"x": {"$ref": "#/$defs/a"}}}}) == (
        "Invalid schema at /$defs/a: recursive $ref (a reference back into itself) is not supported"
    )


def test_deep_and_exponential_references_are_refused_quickly():
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(999)} | {"d999": {"type": "integer"}}
    template = {"variables": {"$defs": chain, "properties": {"x": {"$ref": "#/$defs/d0", "default": 1}}}}
    assert (
        _refused(template)
        == "Invalid schema at /$defs/d32: subschemas nest deeper than 32 levels (references expanded)"
    )
    assert _cpu_ms(template) < QUICK_MS
    doubling = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(12)} | {"d12": {}}
    template = {"variables": {"$defs": doubling, "properties": {"x": {"$ref": "#/$defs/d0", "default": 1}}}}
    assert _refused(template) == (
        "Invalid schema at /$defs/d4: the schema expands to more than 1000 subschemas through $ref"
    )
    assert _cpu_ms(template) < QUICK_MS


def test_deep_schemas_are_refused_naming_the_place():
    deep = json.loads('{"not":' * 40 + "{}" + "}" * 40)
    message = _refused(_variables({"x": deep}))
    assert message == "Invalid schema at /properties/x" + "/not" * 32 + ": subschemas nest deeper than 32 levels"
    at_limit = json.loads('{"not":' * 15 + '{"not": {"type": "string"}}' + "}" * 15)
    assert validate_job_variable_defaults(_variables({"x": {**at_limit, "default": "s"}})) is None


def test_big_schemas_are_refused():
    many_values = _variables({"x": {"type": "array", "default": list(range(6_000))}})
    assert _refused(many_values) == (
        "Invalid schema at /properties/x/default: the schema holds more than 5000 JSON values"
    )
    assert _cpu_ms(many_values) < QUICK_MS
    many_subschemas = _variables({f"p{i}": {"type": "string", "default": "x"} for i in range(1_200)})
    assert (
        _refused(many_subschemas) == "Invalid schema at /: the schema expands to more than 1000 subschemas through $ref"
    )
    assert _cpu_ms(many_subschemas) < QUICK_MS
    at_the_limits = _variables({f"p{i}": {"type": "string", "pattern": "^(x+)+$", "default": "xx"} for i in range(150)})
    assert validate_job_variable_defaults(at_the_limits) is None
    assert _cpu_ms(at_the_limits) < QUICK_MS


@pytest.mark.parametrize(
    "attack",
    [
        {"type": "array", "items": {"enum": list(range(10_000, 10_400))}, "default": list(range(3_000))},
        {
            "type": "array",
            "items": {"anyOf": [{"type": "string", "minLength": i} for i in range(50)]},
            "default": list(range(2_000)),
        },
        {"anyOf": [{"type": "integer", "minimum": i} for i in range(400)], "default": "a" * 50_000},
    ],
    ids=["enum-times-array", "wide-anyof-times-array", "errors-on-a-long-string"],
)
def test_costly_validations_are_cut_off_by_the_budget(attack):
    message = _refused(_variables({"x": attack}))
    cut_off = (
        "Invalid schema: validating its defaults takes more than 5000 steps; simplify the schema",
        "Invalid schema: validating its defaults takes more than 50 ms; simplify the schema",
    )
    # On a fast machine the long string's 400 failed branches may finish inside the CPU backstop:
    # then the default is refused for what it is. Either way the request is refused in bounded time.
    finished = "Validation failed for work pool's job variable defaults: Validation failed for field 'x'."
    assert message in cut_off or (
        attack["default"] == "a" * 50_000
        and message.startswith(finished)
        and message.endswith("is not valid under any of the given schemas")
    ), message
    assert _cpu_ms(_variables({"x": attack})) < MAX_VALIDATION_CPU_SECONDS * 1000 + QUICK_MS


def test_unique_items_is_linear_and_keeps_json_equality():
    distinct = [{"a": i} for i in range(1_500)]
    assert validate_job_variable_defaults(_variables({"x": {"uniqueItems": True, "default": distinct}})) is None
    assert _cpu_ms(_variables({"x": {"uniqueItems": True, "default": distinct}})) < QUICK_MS
    assert (
        validate_job_variable_defaults(_variables({"x": {"uniqueItems": True, "default": [1, True, 0, False]}})) is None
    )
    for same in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}], [None, None]):
        assert _refused(_variables({"x": {"uniqueItems": True, "default": same}})).endswith("has non-unique elements")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"minLength": "x"},
            "Invalid schema at /properties/x/minLength: 'minLength' must be a non-negative integer, not 'x'",
        ),
        (
            {"multipleOf": 0},
            "Invalid schema at /properties/x/multipleOf: 'multipleOf' must be a number greater than 0, not 0",
        ),
        (
            {"required": "a"},
            "Invalid schema at /properties/x/required: 'required' must be an array of distinct strings, not 'a'",
        ),
        (
            {"items": [{}]},
            "Invalid schema at /properties/x/items: 'items' must be a schema (use 'prefixItems' for tuples)",
        ),
        ({"anyOf": []}, "Invalid schema at /properties/x/anyOf: 'anyOf' must be a non-empty array of schemas"),
        (
            {"properties": {"a": 3}},
            "Invalid schema at /properties/x/properties/a: a schema must be an object or a boolean, not 3",
        ),
        ({"unevaluatedProperties": False}, "Invalid schema at /properties/x: unevaluatedProperties is not supported"),
        ({"$dynamicRef": "#meta"}, "Invalid schema at /properties/x: dynamic references are not supported"),
        (
            {"$schema": "http://example.com/s"},
            "Invalid schema at /properties/x/$schema: '$schema' must be 'https://json-schema.org/draft/2020-12/schema' (the only dialect supported), not 'http://example.com/s'",
        ),
    ],
)
def test_malformed_keywords_are_422_naming_the_place(schema, message):
    assert _refused(_variables({"x": schema})) == message


def test_huge_quotient_in_multiple_of_is_an_answer():
    assert _refused(_variables({"x": {"multipleOf": 1e-308, "default": 1e308}})) == (
        DEFAULTS + "Validation failed for field 'x'. Failure reason: 1e+308 is not a multiple of 1e-308"
    )


# --- generated schemas (hypothesis) ------------------------------------------------------------


@hypothesis_settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(variables=variables_schemas)
def test_any_generated_schema_is_accepted_or_refused_with_a_422_in_a_bounded_time(variables):
    template = {"job_configuration": {"c": "1"}, "variables": variables}
    started = time.thread_time()
    try:
        validate_job_variable_defaults(template)
    except JobVariableDefaultsError as exc:
        assert str(exc)  # a reason, never an empty 422
    assert time.thread_time() - started < MAX_VALIDATION_CPU_SECONDS + QUICK_MS / 1000
