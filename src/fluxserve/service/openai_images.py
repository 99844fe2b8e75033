"""OpenAI Images API requests as prediction inputs: which model, what size, how many predictions.

HTTP-free: :mod:`fluxserve.api.openai_images` parses the request, asks :func:`plan` for the predictions to
create, creates and waits for them. Every refusal is an :class:`OpenAIParamError` naming OpenAI's parameter.

Sizes are never ignored. A ``WxH`` goes to the model's own size inputs: ``custom`` width and height where the
model takes them and the size is in range; otherwise the aspect ratio nearest to W:H and the megapixels nearest
to W·H. The response's ``size`` is the size of the image actually made. A ratio far outside every one the model
makes (more than 25 % off the nearest) or a size outside 64–4096 px is refused with a 400 naming ``size``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.registry import ModelSpec, Registry

#: Most images one request may ask for (``n``), unless a model makes more in one prediction.
MAX_N = 4
#: The OpenAI parameters FLUX has no use for: accepted, documented, and otherwise ignored (values checked).
NO_OP_VALUES: dict[str, tuple[str, ...]] = {
    "quality": ("low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"),
    "style": ("vivid", "natural"),
    "moderation": ("low", "auto"),
    "input_fidelity": ("high", "low"),
}
#: OpenAI's parameters (what is not one of these and not a model input is ignored, with a log line).
OPENAI_PARAMS = frozenset(
    {
        *NO_OP_VALUES,
        "model",
        "prompt",
        "n",
        "size",
        "response_format",
        "output_format",
        "output_compression",
        "background",
        "user",
        "safety_identifier",
        "stream",
        "partial_images",
        "image",
        "image[]",
        "mask",
    }
)
#: The edit models tried, in order, when an edit names no model and no default edit model is set.
EDIT_MODEL_PREFERENCE = (
    "black-forest-labs/flux-kontext-dev",
    "black-forest-labs/flux-2-klein-4b",
    "black-forest-labs/flux-2-dev",
    "black-forest-labs/flux-dev",
)
#: A model's image inputs, most capable first: (input name, takes several).
IMAGE_INPUTS = (("input_images", True), ("images", True), ("input_image", False), ("image", False))
#: How far (as a ratio) the nearest aspect ratio may be from the requested one.
MAX_RATIO_DISTANCE = math.log(1.25)
MIN_SIDE, MAX_SIDE = 64, 4096

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$")
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")
_MEGAPIXEL_INPUTS = ("megapixels", "output_megapixels", "resolution")


class OpenAIParamError(ValueError):
    """A request parameter we refuse: ``param`` is OpenAI's name for it; ``status`` 400 (or 404)."""

    def __init__(self, param: str | None, message: str, *, status: int = 400, code: str = "invalid_value") -> None:
        if param and param not in message:
            message = f"{param}: {message}"  # the message names the parameter, as the rest of the API's do
        super().__init__(message)
        self.param = param
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Plan:
    """The predictions one OpenAI request becomes: one input per prediction, and what the response reports."""

    spec: ModelSpec
    inputs: list[dict[str, Any]]
    output_format: str  # OpenAI's name: png, jpeg or webp
    response_format: str  # url or b64_json
    notes: list[str] = field(default_factory=list)  # for the predictions' logs


def resolve_model(
    registry: Registry, name: str | None, *, default: str | None, aliases: Mapping[str, str]
) -> ModelSpec:
    """The served model ``name`` names: an alias, ``owner/name``, or a served model's bare name (``flux-schnell``)."""
    wanted = (name or "").strip() or default
    if not wanted:
        raise OpenAIParamError("model", "model is required (this server has no default model)")
    ref = aliases.get(wanted, wanted)
    spec = registry.get(ref)
    if spec is None and "/" not in ref:
        matches = [s for s in registry if s.name == ref]
        spec = matches[0] if len(matches) == 1 else None
    if spec is None:
        served = ", ".join(sorted(s.ref for s in registry))
        raise OpenAIParamError(
            "model",
            f"The model '{wanted}' is not served here. Served models: {served}",
            status=404,
            code="model_not_found",
        )
    return spec


def default_edit_model(registry: Registry, configured: str | None) -> str | None:
    """The configured default edit model, else the first served model of :data:`EDIT_MODEL_PREFERENCE`
    that is not refused, else the first served model that takes an image."""
    if configured:
        return str(configured)
    specs = [registry.get(ref) for ref in EDIT_MODEL_PREFERENCE]
    candidates = [s for s in specs if s is not None] + [s for s in registry if s not in specs]
    for spec in candidates:
        if not spec.refused and image_input(spec) is not None:
            return str(spec.ref)
    return None


def image_input(spec: ModelSpec) -> tuple[InputField, bool] | None:
    """The model's image input and whether it takes several, if it has one."""
    fields = {f.name: f for f in spec.inputs}
    for name, several in IMAGE_INPUTS:
        if name in fields:
            return fields[name], several
    return None


def parse_size(size: str | None) -> tuple[int, int] | None:
    """``WxH`` as (W, H); None for ``auto`` or no size. 400 naming ``size`` when malformed or out of range."""
    if size is None or size.strip().lower() in ("", "auto"):
        return None
    match = _SIZE.match(size)
    if not match:
        raise OpenAIParamError("size", f"size must be WIDTHxHEIGHT (such as 1024x1024) or auto, not {size!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise OpenAIParamError("size", f"size {width}x{height}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    return width, height


def size_inputs(spec: ModelSpec, size: tuple[int, int] | None, *, editing: bool = False) -> dict[str, Any]:
    """The model inputs that make an image of about ``size`` (see the module docstring); ``{}`` for no size."""
    fields = {f.name: f for f in spec.inputs}
    aspect = fields.get("aspect_ratio")
    if size is None:
        if editing and aspect is not None and aspect.choices and "match_input_image" in aspect.choices:
            return {"aspect_ratio": "match_input_image"}
        return {}
    width, height = size
    if aspect is not None and aspect.choices and "custom" in aspect.choices and _in_range(fields, width, height):
        return {"aspect_ratio": "custom", "width": width, "height": height}
    if aspect is not None and aspect.choices:
        ratios = {c: _ratio(c) for c in aspect.choices if _ratio(c) is not None}
        if ratios:
            return {"aspect_ratio": _nearest_ratio(spec, ratios, width, height), **_megapixels(fields, width * height)}
    if "width" in fields and "height" in fields:
        if not _in_range(fields, width, height):
            w, h = fields["width"], fields["height"]
            raise OpenAIParamError(
                "size", f"size {width}x{height} is outside what {spec.ref} makes: width {_span(w)}, height {_span(h)}"
            )
        return {"width": width, "height": height}
    raise OpenAIParamError("size", f"{spec.ref} takes no size; leave size out or send auto")


def _ratio(choice: Any) -> float | None:
    match = _RATIO.match(str(choice))
    return float(match[1]) / float(match[2]) if match else None


def _nearest_ratio(spec: ModelSpec, ratios: dict[Any, float | None], width: int, height: int) -> Any:
    wanted = math.log(width / height)
    choice, distance = min(((c, abs(math.log(r) - wanted)) for c, r in ratios.items() if r), key=lambda t: t[1])
    if distance > MAX_RATIO_DISTANCE:
        shown = ", ".join(str(c) for c in ratios)
        raise OpenAIParamError(
            "size", f"size {width}x{height}: no aspect ratio of {spec.ref} is near {width}:{height} (it makes {shown})"
        )
    return choice


def _megapixels(fields: Mapping[str, InputField], pixels: int) -> dict[str, Any]:
    """The megapixel-like input's choice nearest (as a ratio) to ``pixels``, if the model has such an input."""
    for name in _MEGAPIXEL_INPUTS:
        f = fields.get(name)
        if f is None or not f.choices:
            continue
        numbers = {c: float(m[1]) for c in f.choices if (m := _NUMBER.match(str(c))) and float(m[1]) > 0}
        if numbers:
            wanted = math.log(pixels / 1e6)
            return {name: min(numbers, key=lambda c: abs(math.log(numbers[c]) - wanted))}
    return {}


def _in_range(fields: Mapping[str, InputField], width: int, height: int) -> bool:
    w, h = fields.get("width"), fields.get("height")
    if w is None or h is None:
        return False
    return _fits(w, width) and _fits(h, height)


def _fits(f: InputField, value: int) -> bool:
    return (f.minimum is None or value >= f.minimum) and (f.maximum is None or value <= f.maximum)


def _span(f: InputField) -> str:
    return f"{f.minimum:g} to {f.maximum:g}" if f.minimum is not None and f.maximum is not None else "any"


def output_inputs(spec: ModelSpec, output_format: str | None, compression: int | None) -> tuple[dict[str, Any], str]:
    """``output_format`` (OpenAI's png/jpeg/webp; default png) and ``output_compression`` as model inputs,
    and the format the response reports."""
    fields = {f.name: f for f in spec.inputs}
    fmt_field = fields.get("output_format")
    inputs: dict[str, Any] = {}
    choices = tuple(str(c) for c in (fmt_field.choices or ())) if fmt_field is not None else ()
    wanted = (output_format or "").lower() or None
    if wanted is None:
        wanted = "png" if "png" in choices or not choices else ("jpeg" if "jpg" in choices else choices[0])
    ours = {"jpeg": "jpg", "jpg": "jpg"}.get(wanted, wanted)
    if choices and ours not in choices:
        offered = ", ".join("jpeg" if c == "jpg" else c for c in choices)
        raise OpenAIParamError("output_format", f"{spec.ref} makes {offered}, not {output_format}")
    if not choices and wanted != "png":
        raise OpenAIParamError("output_format", f"{spec.ref} has no output_format input; leave output_format out")
    if fmt_field is not None:
        inputs["output_format"] = ours
    if compression is not None:
        if not 0 <= compression <= 100:
            raise OpenAIParamError("output_compression", "output_compression must be 0 to 100")
        if "output_quality" in fields:
            inputs["output_quality"] = compression
    return inputs, "jpeg" if ours == "jpg" else ours


def split_n(spec: ModelSpec, n: int) -> list[int]:
    """How many images each prediction makes: ``num_outputs`` per prediction where the model takes it."""
    fields = {f.name: f for f in spec.inputs}
    per = int(fields["num_outputs"].maximum or 1) if "num_outputs" in fields else 1
    most = max(MAX_N, per)
    if not 1 <= n <= most:
        raise OpenAIParamError("n", f"n must be 1 to {most} for {spec.ref}, not {n}")
    return [min(per, n - done) for done in range(0, n, per)]


_TEXT_PARAMS = (
    "model", "prompt", "size", "response_format", "output_format", "user", "safety_identifier", "background",
    *NO_OP_VALUES,
)  # fmt: skip
_INTEGER_PARAMS = ("n", "output_compression", "partial_images")


def check_types(params: Mapping[str, Any]) -> None:
    """Each OpenAI parameter has its type (null counts as not given); 400 naming the first one that does not."""
    for name in _TEXT_PARAMS:
        value = params.get(name)
        if value is not None and not isinstance(value, str):
            raise OpenAIParamError(name, f"{name} must be a string, not {type(value).__name__}")
    for name in _INTEGER_PARAMS:
        _int(params, name, 0)
    stream = params.get("stream")
    if stream is not None and not isinstance(stream, bool | str):
        raise OpenAIParamError("stream", "stream must be a boolean")


def check_no_ops(params: Mapping[str, Any]) -> None:
    """Refuse values OpenAI would refuse for the parameters FLUX ignores, and what FLUX cannot do."""
    for name, allowed in NO_OP_VALUES.items():
        value = params.get(name)
        if value is not None and str(value) not in allowed:
            raise OpenAIParamError(name, f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    if str(params.get("background") or "auto") not in ("auto", "opaque"):
        raise OpenAIParamError("background", "FLUX models make opaque images: background must be auto or opaque")
    if str(params.get("stream") or "").lower() in ("true", "1"):
        raise OpenAIParamError("stream", "streaming partial images is not supported here; leave stream out")
    response_format = params.get("response_format")
    if response_format is not None and response_format not in ("url", "b64_json"):
        raise OpenAIParamError("response_format", f"response_format must be url or b64_json, not {response_format!r}")


def model_extras(spec: ModelSpec, params: Mapping[str, Any], taken: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Parameters that are the model's own inputs (``seed``, ``num_inference_steps`` … sent as extra body), and
    the names of the rest that are neither OpenAI's nor the model's (ignored, as unknown inputs are)."""
    names = {f.name for f in spec.inputs} - set(taken)
    extras = {k: v for k, v in params.items() if k in names and k not in OPENAI_PARAMS and v is not None}
    ignored = sorted(k for k in params if k not in OPENAI_PARAMS and k not in extras and k not in taken)
    return extras, ignored


def plan(
    spec: ModelSpec,
    params: Mapping[str, Any],
    *,
    images: list[str] | None = None,
    mask: str | None = None,
) -> Plan:
    """The predictions for a generation (``images`` None) or an edit (``images``: input URLs of the uploads)."""
    check_types(params)
    check_no_ops(params)
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise OpenAIParamError("prompt", "prompt is required")
    n = _int(params, "n", 1)
    compression = params.get("output_compression")
    base: dict[str, Any] = {"prompt": prompt}
    base.update(size_inputs(spec, parse_size(params.get("size")), editing=images is not None))
    outputs, fmt = output_inputs(
        spec, params.get("output_format"), None if compression is None else _int(params, "output_compression", 0)
    )
    base.update(outputs)
    if images is not None:
        base.update(_image_inputs(spec, images))
    if mask is not None:
        if not any(f.name == "mask" for f in spec.inputs):
            raise OpenAIParamError(
                "mask", f"{spec.ref} does not inpaint with a mask; serve an inpainting model (flux-fill-dev)"
            )
        base["mask"] = mask
    extras, ignored = model_extras(spec, params, base)
    base.update(extras)
    chunks = split_n(spec, n)
    has_count = any(f.name == "num_outputs" for f in spec.inputs)
    inputs = [{**base, "num_outputs": count} if has_count else dict(base) for count in chunks]
    notes = [f"Ignored OpenAI parameters: {', '.join(ignored)}"] if ignored else []
    response_format = str(params.get("response_format") or "url")
    return Plan(spec, inputs, fmt, response_format, notes)


def _image_inputs(spec: ModelSpec, images: list[str]) -> dict[str, Any]:
    """One image goes to the model's single-image input where it has one (kontext's ``input_image``, flux-dev's
    ``image``), several to its array input (``input_images``, klein's ``images``)."""
    fields = {f.name: (f, several) for name, several in IMAGE_INPUTS if (f := _field(spec, name)) is not None}
    if not fields:
        raise OpenAIParamError(
            "model", f"{spec.ref} does not edit images; name an editing model such as flux-kontext-dev"
        )
    single = next((f for f, several in fields.values() if not several), None)
    if len(images) == 1 and single is not None:
        return {single.name: images[0]}
    array = next((f for f, several in fields.values() if several), None)
    if array is None:
        raise OpenAIParamError(
            "image",
            f"{spec.ref} takes one image, not {len(images)}; send one, or use a multi-reference model "
            "such as flux-2-klein-4b",
        )
    if len(images) > array.item_limit:
        raise OpenAIParamError("image", f"{spec.ref} takes at most {array.item_limit} images, not {len(images)}")
    return {array.name: images}


def _field(spec: ModelSpec, name: str) -> InputField | None:
    return next((f for f in spec.inputs if f.name == name), None)


def _int(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise OpenAIParamError(name, f"{name} must be an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OpenAIParamError(name, f"{name} must be an integer, not {value!r}") from None
    if not number.is_integer():
        raise OpenAIParamError(name, f"{name} must be an integer, not {value!r}")
    return int(number)
