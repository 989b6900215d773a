"""Client-side payload validation: a model or an equal plain dict; bad ones raise InvalidRequest."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from client.errors import InvalidRequest
from schemas.common import error_details

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
