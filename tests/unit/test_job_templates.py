"""Prefect's base_job_template rules: structure and filling (schemas), defaults (services)."""

import pytest

from schemas.job_templates import fill_template, placeholders, validate_base_job_template
from services.job_templates import JobVariableDefaultsError, validate_job_variable_defaults

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
