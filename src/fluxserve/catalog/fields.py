"""Input fields and their validation: one definition per input, the validator that turns a client's
``input`` into a predictor's keyword arguments (defaults filled in) or :class:`InvalidField` records."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from fluxserve.catalog.sizes import MAX_URI_ARRAY_ITEMS
from fluxserve.errors import InvalidField

#: The largest seed: torch.Generator.manual_seed takes 0..2^64-1.
SEED_MAX = 2**64 - 1

#: ``json`` takes any JSON value unchecked: for fields of a forwarded model's schema that the catalog has no
#: type for (objects, arrays of non-URIs); the upstream validates them.
FieldType = Literal["string", "integer", "number", "boolean", "uri", "uri_array", "json"]

_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class InputField:
    """One input of a model, as Cog would publish it."""

    name: str
    type: FieldType
    description: str
    default: Any = _NO_DEFAULT
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    #: Most URIs a ``uri_array`` takes (None: :data:`~fluxserve.catalog.sizes.MAX_URI_ARRAY_ITEMS`).
    max_items: int | None = None

    @property
    def item_limit(self) -> int:
        """Most URIs this ``uri_array`` field takes."""
        return self.max_items if self.max_items is not None else MAX_URI_ARRAY_ITEMS

    @property
    def has_default(self) -> bool:
        """Whether the field has a default value (fields without one are ``None`` when absent)."""
        return self.default is not _NO_DEFAULT

    @property
    def title(self) -> str:
        """Cog's title: the name with words capitalised."""
        return " ".join(w.capitalize() for w in self.name.split("_"))


@dataclass
class InputValidation:
    """Result of :func:`validate_input`: the values a predictor gets, or the reasons it cannot run."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[InvalidField] = field(default_factory=list)
    #: Keys the model does not take, dropped as Cog and Replicate drop them (not set in strict mode).
    ignored: list[str] = field(default_factory=list)


def _check_type(f: InputField, value: Any) -> tuple[Any, str | None]:
    """Coerce ``value`` the way Cog's pydantic does in lax mode; return (value, error or None)."""
    if f.type == "json":
        return value, None
    if f.type == "boolean":
        if isinstance(value, bool):
            return value, None
        return value, "must be a boolean (true or false)"
    if f.type == "integer":
        if isinstance(value, bool):
            return value, "must be an integer"
        if isinstance(value, int):
            return value, None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value), None
        if isinstance(value, str):
            try:
                return int(value.strip()), None
            except ValueError:
                pass
        return value, "must be an integer"
    if f.type == "number":
        if isinstance(value, bool):
            return value, "must be a number"
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value), None
        if isinstance(value, str):
            try:
                number = float(value.strip())
                if math.isfinite(number):
                    return number, None
            except ValueError:
                pass
        return value, "must be a number"
    if f.type == "uri_array":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value), None
        return value, "must be a list of URI strings"
    # string and uri
    if isinstance(value, str):
        return value, None
    if f.type == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        # Cog accepts numbers for string enums such as megapixels: 1 -> "1".
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        return text, None
    return value, "must be a string" if f.type == "string" else "must be a URI string"


def _format_choices(choices: tuple[Any, ...]) -> str:
    return ", ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in choices)


def _check_field(f: InputField, raw: Any, max_text: int | None) -> tuple[Any, InvalidField | None]:
    key = f"input.{f.name}"
    value, type_error = _check_type(f, raw)
    if type_error:
        return raw, InvalidField("invalid_type", key, f"{f.name} {type_error}")
    if f.name == "seed" and f.type == "integer" and not 0 <= value <= SEED_MAX:
        # What torch.Generator.manual_seed takes; beyond it the run would fail without naming the input.
        return value, InvalidField("out_of_range", key, f"seed must be from 0 to {SEED_MAX} (got {_show(raw)})")
    if max_text is not None and f.type == "string" and len(value) > max_text:
        return value, InvalidField(
            "too_long", key, f"{f.name} must be at most {max_text} characters (got {len(value)})"
        )
    # An empty list is the default of fields that default to [] (FLUX.2's reference images), else a mistake.
    if f.type == "uri_array" and not value and not f.has_default:
        return value, InvalidField("too_short", key, f"{f.name} must contain at least one URI")
    if f.type == "uri_array" and len(value) > f.item_limit:
        return value, InvalidField(
            "too_long", key, f"{f.name} must contain at most {f.item_limit} URIs (got {len(value)})"
        )
    if f.choices is not None and value not in f.choices:
        return value, InvalidField(
            "enum", key, f"{f.name} must be one of {_format_choices(f.choices)} (got {_show(raw)})"
        )
    if f.minimum is not None and value < f.minimum:
        limit = _num(f.minimum)
        return value, InvalidField(
            "greater_than_or_equal",
            key,
            f"{f.name} must be greater than or equal to {limit} (got {_show(raw)})",
        )
    if f.maximum is not None and value > f.maximum:
        limit = _num(f.maximum)
        return value, InvalidField(
            "less_than_or_equal", key, f"{f.name} must be less than or equal to {limit} (got {_show(raw)})"
        )
    return value, None


def _show(value: Any) -> str:
    """A value as the client wrote it (JSON), for error messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def validate_input(
    fields: tuple[InputField, ...], raw: Any, *, strict: bool = False, max_text: int | None = None
) -> InputValidation:
    """Validate a client's ``input`` object against ``fields``.

    Wrong types, out-of-range numbers, values outside an enum and missing required fields are all
    reported at once. ``None`` counts as absent, as in Cog. Unknown keys are set aside in ``ignored``
    (Replicate checks unknown properties only at the top level; Cog ignores extra inputs with a
    warning, and clients such as the Vercel AI SDK always send ``num_outputs``); ``strict`` makes
    them errors instead. ``max_text`` caps the length of text inputs (prompts); ``seed`` is always
    bounded to 0..2^64-1, what the generator accepts.
    """
    result = InputValidation()
    if not isinstance(raw, dict):
        result.errors.append(InvalidField("invalid_type", "input", "input must be a JSON object"))
        return result
    known = {f.name for f in fields}
    for key in raw:
        if key not in known and not strict:
            result.ignored.append(key)
        elif key not in known:
            allowed = ", ".join(f.name for f in fields)
            result.errors.append(
                InvalidField(
                    "additional_property_not_allowed",
                    f"input.{key}",
                    f"Additional property {key} is not allowed (this model takes: {allowed})",
                )
            )
    for f in fields:
        raw_value = raw.get(f.name)
        if raw_value is None:
            if f.required:
                result.errors.append(InvalidField("required", f"input.{f.name}", f"{f.name} is required"))
            else:
                result.values[f.name] = f.default if f.has_default else None
            continue
        value, error = _check_field(f, raw_value, max_text)
        if error:
            result.errors.append(error)
        else:
            result.values[f.name] = value
    return result
