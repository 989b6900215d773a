"""Client-side payload validation: a model or an equal plain dict; bad ones raise InvalidRequest."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from client.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def payload(model: type[M], value: M | dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate a payload given as a model or a plain dict; only the keys set are sent."""
    if value is None:
        return None
    try:
        checked = value if isinstance(value, model) else model.model_validate(value)
    except ValidationError as exc:
        raise InvalidRequest(422, json.loads(exc.json(include_url=False))) from None
    return checked.model_dump(mode="json", exclude_unset=True)
