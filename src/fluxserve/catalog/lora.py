"""flux-dev-lora and flux-schnell-lora: flux-dev's and flux-schnell's inputs plus a LoRA by reference, as Replicate
publishes them (``all-the-public-replicate-models`` 1.352.0: flux-dev-lora ``9dbd61f9…``, flux-schnell-lora
``19482ef1…``; tests/catalog/test_replicate_schemas.py compares them field by field).

``extra_lora`` and ``extra_lora_scale`` (a second LoRA, as cog-flux's dev-lora predictor and later Replicate
versions take) are ours beyond that published version: they come last, so every published field keeps its x-order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.flux import FLUX_DEV_INPUTS, FLUX_SCHNELL_INPUTS
from fluxserve.errors import InvalidField
from fluxserve.lora.refs import LoraError, parse_lora_ref

#: The inputs whose value names a LoRA, and the scale input of each (the worker fetches them before the run).
LORA_INPUTS: dict[str, str] = {"lora_weights": "lora_scale", "extra_lora": "extra_lora_scale"}

LORA_WEIGHTS = InputField(
    "lora_weights",
    "string",
    "Load LoRA weights. Supports Replicate models in the format <owner>/<username> or <owner>/<username>/<version>, "
    "HuggingFace URLs in the format huggingface.co/<owner>/<model-name>, CivitAI URLs in the format "
    "civitai.com/models/<id>[/<model-name>], or arbitrary .safetensors URLs from the Internet. For example, "
    "'fofr/flux-pixar-cars'",
)
LORA_SCALE = InputField(
    "lora_scale",
    "number",
    "Determines how strongly the main LoRA should be applied. Sane results between 0 and 1 for base inference. For "
    "go_fast we apply a 1.5x multiplier to this value; we've generally seen good performance when scaling the base "
    "value by that amount. You may still need to experiment to find the best value for your particular lora.",
    default=1,
    minimum=-1,
    maximum=3,
)
EXTRA_LORA = InputField(
    "extra_lora",
    "string",
    "A second LoRA applied together with lora_weights, in the same formats (a .safetensors URL, a Hugging Face "
    "repo huggingface.co/<owner>/<model-name> or <owner>/<model-name>, or a .tar of a trained LoRA)",
)
EXTRA_LORA_SCALE = InputField(
    "extra_lora_scale",
    "number",
    "Determines how strongly the extra LoRA should be applied.",
    default=1,
    minimum=-1,
    maximum=3,
)


def _with_lora(inputs: tuple[InputField, ...], extra: tuple[InputField, ...] = ()) -> tuple[InputField, ...]:
    """``inputs`` with the LoRA fields before ``megapixels`` (Replicate's order) and ``extra`` at the end."""
    at = [f.name for f in inputs].index("megapixels")
    return (*inputs[:at], LORA_WEIGHTS, LORA_SCALE, *inputs[at:], *extra)


_DEV_STEPS_FOR_LORA = {
    # flux-dev-lora's published wording is shorter than flux-dev's.
    "num_inference_steps": "Number of denoising steps. Recommended range is 28-50",
}

FLUX_DEV_LORA_INPUTS: tuple[InputField, ...] = _with_lora(
    tuple(
        replace(f, description=_DEV_STEPS_FOR_LORA[f.name]) if f.name in _DEV_STEPS_FOR_LORA else f
        for f in FLUX_DEV_INPUTS
    ),
    (EXTRA_LORA, EXTRA_LORA_SCALE),
)
FLUX_SCHNELL_LORA_INPUTS: tuple[InputField, ...] = _with_lora(FLUX_SCHNELL_INPUTS)


def lora_input_errors(values: dict[str, Any]) -> list[InvalidField]:
    """What can be checked of the LoRA inputs at create time: each names a LoRA in an accepted form, and
    ``extra_lora`` is not ``lora_weights`` again (reachability and content are checked when the worker fetches)."""
    errors: list[InvalidField] = []
    for name in LORA_INPUTS:
        value = values.get(name)
        if value is None:
            continue
        try:
            parse_lora_ref(str(value), name)
        except LoraError as exc:
            errors.append(InvalidField("invalid_lora", f"input.{name}", str(exc)))
    main, extra = values.get("lora_weights"), values.get("extra_lora")
    if main is not None and extra is not None and str(main).strip() == str(extra).strip():
        errors.append(InvalidField("duplicate_lora", "input.extra_lora", "extra_lora is the same LoRA as lora_weights"))
    return errors
