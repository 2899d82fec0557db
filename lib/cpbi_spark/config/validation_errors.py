"""Turn pydantic validation errors into :class:`ConfigProblem` s naming file, key path and reason.

Example:
    >>> from pydantic import ValidationError
    >>> from cpbi_spark.config.models import TableConfig
    >>> try:
    ...     TableConfig.model_validate({"layer": "gold", "description": "", "grain": "g", "keys": ["k"],
    ...                                 "columns": {"k": "int"}, "colums": {}})
    ... except ValidationError as exc:
    ...     print(problems_from_validation_error(exc, lambda path: "t.yaml", TableConfig)[0])
    t.yaml: colums: unknown key (did you mean 'columns'?)
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from cpbi_spark.config.merge import KeyPath, format_key_path
from cpbi_spark.errors import ConfigProblem

# pydantic's wording, rephrased for people editing YAML rather than calling Python.
_REASONS = {
    "missing": "required key is missing",
    "dict_type": "must be a mapping (key: value lines)",
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "list_type": "must be a list",
    "string_type": "must be a text value",
}


def problems_from_validation_error(
    error: ValidationError,
    origin: Callable[[KeyPath], str],
    root_model: type[BaseModel],
    prefix: KeyPath = (),
) -> list[ConfigProblem]:
    """One problem per pydantic error; ``origin(path)`` names the file that set ``path``.

    ``prefix`` is the key path of the validated value inside the whole config (e.g. ``("tables", "x")``).
    """
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        bad_key = bool(loc) and loc[-1] == "[key]"
        if bad_key:
            loc = loc[:-1]
        path = (*prefix, *loc)
        reason = _reason(item, root_model, loc, show_input=not bad_key)
        if bad_key:
            reason = f"invalid name {loc[-1]!r}: {reason}"
        problems.append(ConfigProblem(origin(path), format_key_path(path), reason))
    return problems


def _reason(item: Any, root_model: type[BaseModel], loc: KeyPath, show_input: bool) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        allowed = _fields_of(root_model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if hint:
            return f"unknown key (did you mean {hint[0]!r}?)"
        return f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"
    reason = _REASONS.get(kind)
    if reason is None:
        reason = item["msg"].removeprefix("Value error, ")
        reason = reason.replace("Input should", "should").replace("String should", "should")
    value = item.get("input")
    # Our own value errors already quote the value; pydantic's built-in messages do not.
    if (
        show_input
        and kind not in ("missing", "value_error")
        and (value is None or isinstance(value, (str, int, float, bool)))
    ):
        shown = repr(value)
        reason += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return reason


def _fields_of(root_model: type[BaseModel], loc: KeyPath) -> list[str]:
    """Field names of the model found at ``loc`` under ``root_model`` (empty if not a model)."""
    annotation: Any = root_model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    # Annotated[X, ...] -> X; X | None -> X.
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
