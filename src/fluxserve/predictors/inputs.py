"""The shared input catalog: one definition per input field, its schema and its validation.

Every model's input schema is a tuple of :class:`InputField`. From it we derive both the Cog-style
OpenAPI ``Input`` schema published at ``GET /v1/models/{owner}/{name}`` and the validator that turns
a client's ``input`` object into the keyword arguments a predictor receives (defaults filled in).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

#: ``json`` takes any JSON value unchecked: for fields of a forwarded model's schema that the catalog has no
#: type for (objects, arrays of non-URIs); the upstream validates them.
FieldType = Literal["string", "integer", "number", "boolean", "uri", "uri_array", "json"]

#: Most images one ``uri_array`` input takes (each is fetched and decoded before the prediction runs).
MAX_URI_ARRAY_ITEMS = 4

#: Replicate's schnell/dev size table (width, height) at 1 megapixel; hand-picked, not computed.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

OUTPUT_FORMATS: tuple[str, ...] = ("webp", "jpg", "png")
MEGAPIXELS: tuple[str, ...] = ("1", "0.25")

#: FLUX.1 Kontext's size table (width, height) for an explicit ``aspect_ratio`` [cog-flux-kontext flux/util.py].
KONTEXT_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1328, 800),
    "21:9": (1568, 672),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:5": (944, 1104),
    "5:4": (1104, 944),
    "3:4": (880, 1184),
    "4:3": (1184, 880),
    "9:16": (800, 1328),
    "9:21": (672, 1568),
}
#: The ``aspect_ratio`` value that makes Kontext follow its input image.
MATCH_INPUT_IMAGE = "match_input_image"

#: The (width, height) pairs Kontext was trained on; an input image is snapped to the one closest in aspect ratio
#: (the same list as diffusers' ``PREFERRED_KONTEXT_RESOLUTIONS`` and cog-flux-kontext's ``PREFERED_…``).
PREFERRED_KONTEXT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)

#: flux-dev img2img: the input image is scaled down to fit this square before rounding to multiples of 16.
IMG2IMG_MAX_SIDE = 1440


def image_size(aspect_ratio: str, megapixels: str = "1") -> tuple[int, int]:
    """Return (width, height) for a schnell/dev ``aspect_ratio`` and ``megapixels`` ("1" or "0.25")."""
    width, height = ASPECT_RATIOS[aspect_ratio]
    if megapixels == "0.25":
        return width // 2, height // 2
    return width, height


def img2img_size(width: int, height: int) -> tuple[int, int]:
    """flux-dev's output size for an input image of ``width`` × ``height`` (cog-flux's rule).

    Scale down (never up) to fit :data:`IMG2IMG_MAX_SIDE` square, truncating to whole pixels, then round each
    side to the nearest multiple of 16 with Python's ``round`` (ties to even: 1000 → 992, as in cog-flux). A side
    that would round to 0 (extreme aspect ratios) becomes 16.
    """
    scale = min(IMG2IMG_MAX_SIDE / width, IMG2IMG_MAX_SIDE / height, 1)
    if scale < 1:
        width, height = int(width * scale), int(height * scale)
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


def kontext_snap(width: int, height: int) -> tuple[int, int]:
    """The :data:`PREFERRED_KONTEXT_RESOLUTIONS` entry closest in aspect ratio to ``width`` × ``height``.

    Ties go to the smaller (width, height) pair, as ``min`` over (distance, w, h) tuples does in diffusers and
    cog-flux-kontext.
    """
    ratio = width / height
    _, w, h = min((abs(ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    return w, h


def kontext_image_size(aspect_ratio: str, input_size: tuple[int, int]) -> tuple[int, int]:
    """Kontext's output (width, height): the snapped input size for ``match_input_image``, else the table's."""
    if aspect_ratio == MATCH_INPUT_IMAGE:
        return kontext_snap(*input_size)
    return KONTEXT_ASPECT_RATIOS[aspect_ratio]


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

    @property
    def has_default(self) -> bool:
        """Whether the field has a default value (fields without one are ``None`` when absent)."""
        return self.default is not _NO_DEFAULT

    @property
    def title(self) -> str:
        """Cog's title: the name with words capitalised."""
        return " ".join(w.capitalize() for w in self.name.split("_"))


@dataclass(frozen=True)
class InvalidField:
    """One reason an input was refused; serialised into a 422's ``invalid_fields``."""

    type: str
    field: str
    description: str


@dataclass
class InputValidation:
    """Result of :func:`validate_input`: the values a predictor gets, or the reasons it cannot run."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[InvalidField] = field(default_factory=list)


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


def _check_field(f: InputField, raw: Any) -> tuple[Any, InvalidField | None]:
    key = f"input.{f.name}"
    value, type_error = _check_type(f, raw)
    if type_error:
        return raw, InvalidField("invalid_type", key, f"{f.name} {type_error}")
    if f.type == "uri_array" and not value:
        return value, InvalidField("too_short", key, f"{f.name} must contain at least one URI")
    if f.type == "uri_array" and len(value) > MAX_URI_ARRAY_ITEMS:
        return value, InvalidField(
            "too_long", key, f"{f.name} must contain at most {MAX_URI_ARRAY_ITEMS} URIs (got {len(value)})"
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


def validate_input(fields: tuple[InputField, ...], raw: Any) -> InputValidation:
    """Validate a client's ``input`` object against ``fields``.

    Unknown keys, wrong types, out-of-range numbers, values outside an enum and missing required
    fields are all reported at once. ``None`` counts as absent, as in Cog.
    """
    result = InputValidation()
    if not isinstance(raw, dict):
        result.errors.append(InvalidField("invalid_type", "input", "input must be a JSON object"))
        return result
    known = {f.name for f in fields}
    for key in raw:
        if key not in known:
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
        value, error = _check_field(f, raw_value)
        if error:
            result.errors.append(error)
        else:
            result.values[f.name] = value
    return result


def cog_input_schema(fields: tuple[InputField, ...]) -> dict[str, dict[str, Any]]:
    """Return ``{"Input": {...}, <enum schemas>}`` in the shape Cog generates.

    Enums are separate component schemas referenced through ``allOf`` as Cog publishes them;
    files are ``format: uri`` strings, and lists of files arrays of such strings.
    """
    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    for order, f in enumerate(fields):
        prop: dict[str, Any] = {"title": f.title, "x-order": order, "description": f.description}
        if f.choices is not None:
            enum_type = "string" if all(isinstance(c, str) for c in f.choices) else "integer"
            enums[f.name] = {
                "enum": list(f.choices),
                "type": enum_type,
                "title": f.name,
                "description": "An enumeration.",
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{f.name}"}]
        elif f.type == "uri":
            prop.update(type="string", format="uri")
        elif f.type == "uri_array":
            prop.update(type="array", items={"type": "string", "format": "uri"})
        elif f.type == "json":
            pass
        else:
            prop["type"] = f.type
        if f.has_default:
            prop["default"] = f.default
        if f.minimum is not None:
            prop["minimum"] = f.minimum
        if f.maximum is not None:
            prop["maximum"] = f.maximum
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": properties}
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return {"Input": schema, **enums}


# --- the catalog -------------------------------------------------------------------------------

PROMPT = InputField("prompt", "string", "Prompt for generated image", required=True)
ASPECT_RATIO = InputField(
    "aspect_ratio",
    "string",
    "Aspect ratio for the generated image",
    default="1:1",
    choices=tuple(ASPECT_RATIOS),
)
NUM_OUTPUTS = InputField("num_outputs", "integer", "Number of outputs to generate", default=1, minimum=1, maximum=4)
SEED = InputField("seed", "integer", "Random seed. Set for reproducible generation")
OUTPUT_FORMAT = InputField(
    "output_format", "string", "Format of the output images", default="webp", choices=OUTPUT_FORMATS
)
OUTPUT_QUALITY = InputField(
    "output_quality",
    "integer",
    "Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is lowest quality. "
    "Not relevant for .png outputs",
    default=80,
    minimum=0,
    maximum=100,
)
DISABLE_SAFETY_CHECKER = InputField(
    "disable_safety_checker", "boolean", "Disable safety checker for generated images.", default=False
)
GO_FAST = InputField(
    "go_fast",
    "boolean",
    "Run faster predictions with model optimized for speed (currently fp8 quantized); disable to run in "
    "original bf16. Note that outputs will not be deterministic when this is enabled, even if you set a seed.",
    default=True,
)
MEGAPIXELS_FIELD = InputField(
    "megapixels",
    "string",
    "Approximate number of megapixels for generated image",
    default="1",
    choices=MEGAPIXELS,
)

FLUX_SCHNELL_INPUTS: tuple[InputField, ...] = (
    PROMPT,
    ASPECT_RATIO,
    NUM_OUTPUTS,
    InputField(
        "num_inference_steps",
        "integer",
        "Number of denoising steps. 4 is recommended, and lower number of steps produce lower quality outputs, faster.",
        default=4,
        minimum=1,
        maximum=4,
    ),
    SEED,
    OUTPUT_FORMAT,
    OUTPUT_QUALITY,
    DISABLE_SAFETY_CHECKER,
    GO_FAST,
    MEGAPIXELS_FIELD,
)

FLUX_DEV_INPUTS: tuple[InputField, ...] = (
    PROMPT,
    ASPECT_RATIO,
    InputField(
        "image",
        "uri",
        "Input image for image to image mode. The aspect ratio of your output will match this image",
    ),
    InputField(
        "prompt_strength",
        "number",
        "Prompt strength when using img2img. 1.0 corresponds to full destruction of information in image",
        default=0.8,
        minimum=0,
        maximum=1,
    ),
    NUM_OUTPUTS,
    InputField(
        "num_inference_steps",
        "integer",
        "Number of denoising steps. Recommended range is 28-50, and lower number of steps produce lower quality "
        "outputs, faster.",
        default=28,
        minimum=1,
        maximum=50,
    ),
    InputField("guidance", "number", "Guidance for generated image", default=3, minimum=0, maximum=10),
    SEED,
    OUTPUT_FORMAT,
    OUTPUT_QUALITY,
    DISABLE_SAFETY_CHECKER,
    GO_FAST,
    MEGAPIXELS_FIELD,
)

KONTEXT_INPUT_IMAGE = InputField(
    "input_image",
    "uri",
    "Image to use as reference. Must be jpeg, png, gif, or webp.",
)
KONTEXT_INPUT_IMAGES = InputField(
    "input_images",
    "uri_array",
    f"Several reference images (at most {MAX_URI_ARRAY_ITEMS}), instead of input_image: they are scaled to the same "
    "height and placed side by side, left to right, and that composite is the reference image. "
    "Each must be jpeg, png, gif, or webp.",
)

FLUX_KONTEXT_DEV_INPUTS: tuple[InputField, ...] = (
    InputField(
        "prompt",
        "string",
        "Text description of what you want to generate, or the instruction on how to edit the given image.",
        required=True,
    ),
    # Optional in the schema (Replicate's marks it required) because input_images may stand in for it; exactly
    # one of the two is enforced by kontext_input_errors() and by the predictor.
    KONTEXT_INPUT_IMAGE,
    KONTEXT_INPUT_IMAGES,
    InputField(
        "aspect_ratio",
        "string",
        "Aspect ratio of the generated image. Use 'match_input_image' to match the aspect ratio of the input image.",
        default=MATCH_INPUT_IMAGE,
        choices=(*KONTEXT_ASPECT_RATIOS, MATCH_INPUT_IMAGE),
    ),
    InputField("num_inference_steps", "integer", "Number of inference steps", default=28, minimum=4, maximum=50),
    InputField("guidance", "number", "Guidance scale for generation", default=2.5, minimum=0, maximum=10),
    InputField("seed", "integer", "Random seed for reproducible generation. Leave blank for random."),
    InputField("output_format", "string", "Output image format", default="webp", choices=OUTPUT_FORMATS),
    OUTPUT_QUALITY,
    InputField("disable_safety_checker", "boolean", "Disable NSFW safety checker", default=False),
    InputField(
        "go_fast",
        "boolean",
        "Make the model go fast, output quality may be slightly degraded for more difficult prompts",
        default=True,
    ),
)


def kontext_input_errors(values: dict[str, Any]) -> list[InvalidField]:
    """flux-kontext-dev's one cross-field rule: exactly one of ``input_image`` and ``input_images``.

    ``values`` is a client's input or :func:`validate_input`'s values; ``None`` (or absence) means not given.
    Returns [] when the rule holds, else one :class:`InvalidField` whose description names both fields.
    """
    has_one = values.get("input_image") is not None
    has_many = values.get("input_images") is not None
    if has_one and has_many:
        return [
            InvalidField(
                "mutually_exclusive",
                "input.input_images",
                "Give either input_image or input_images, not both "
                "(input_image for one reference image, input_images for several)",
            )
        ]
    if not has_one and not has_many:
        return [
            InvalidField(
                "required",
                "input.input_image",
                "input_image or input_images is required "
                "(input_image for one reference image, input_images for several)",
            )
        ]
    return []


#: Cog's ``Output`` schema for models that return a list of image URLs.
URI_LIST_OUTPUT: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "format": "uri"},
    "title": "Output",
}

#: Cog's ``Output`` schema for models that return one image URL (flux-kontext-dev).
URI_OUTPUT: dict[str, Any] = {"type": "string", "format": "uri", "title": "Output"}
