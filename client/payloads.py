"""Client-side validation of payloads and whole requests; bad ones raise InvalidRequest (422)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from client.errors import InvalidRequest
from schemas.channels import Op
from schemas.common import error_details
from schemas.operations import OPERATIONS

M = TypeVar("M", bound=BaseModel)


def payload(model: type[M], value: M | dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate a payload given as a model or a plain dict; only the keys set are sent."""
    if value is None:
        return None
    try:
        checked = value if isinstance(value, model) else model.model_validate(value)
        return checked.model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        raise InvalidRequest(422, error_details(exc)) from None
    except PydanticSerializationError as exc:  # a value JSON cannot carry, e.g. object() in a template
        raise InvalidRequest(422, [{"type": "serialization", "loc": [], "msg": str(exc)}]) from None


def request_body(op: Op, body: dict[str, Any] | None) -> str:
    """The body of a request as its operation's request model reads it, as JSON text: every
    argument a client method was given is checked before anything is sent, so a wrong type (a
    string where a datetime goes, a name that is not text) raises InvalidRequest naming it, as
    the service would."""
    try:
        checked = OPERATIONS[op].request.model_validate({} if body is None else body)
        return checked.model_dump_json(exclude_unset=True)
    except ValidationError as exc:
        raise InvalidRequest(422, error_details(exc)) from None
    except PydanticSerializationError as exc:
        raise InvalidRequest(422, [{"type": "serialization", "loc": [], "msg": str(exc)}]) from None
