"""The built-in FLUX inputs, as Replicate publishes them: one definition per input field, the per-model
tuples, the Kontext cross-field check, and the output schemas."""

from __future__ import annotations

from typing import Any

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.sizes import (
    ASPECT_RATIOS,
    KONTEXT_ASPECT_RATIOS,
    MATCH_INPUT_IMAGE,
    MAX_URI_ARRAY_ITEMS,
    MEGAPIXELS,
    OUTPUT_FORMATS,
)
from fluxserve.errors import InvalidField

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
# Word for word as Replicate publishes it for flux-schnell and flux-dev (all-the-public-replicate-models 1.352.0;
# replicate/cog-flux's predict.py has since added a sentence on determinism that no published version carries).
GO_FAST = InputField(
    "go_fast",
    "boolean",
    "Run faster predictions with model optimized for speed (currently fp8 quantized); disable to run in original bf16",
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

# all-the-public-replicate-models 1.352.0 predates flux-kontext-dev, so its facts come from the source Replicate
# pushes as black-forest-labs/flux-kontext-dev: github.com/replicate/cog-flux-kontext predict.py (commit b9063c1,
# 2025-07-23; cog-safe-push-configs/kontext-dev.yaml names that official model). Cog's x-order is the parameter
# order. num_inference_steps has defaulted to 28 there since commit cff9c0e (2025-06-27), the change that brought
# go_fast; the first version, a1408d2c (no go_fast), shows 30 on replicate.com/black-forest-labs/flux-kontext-dev/
# versions/a1408d2c…/api. input_images is ours alone: it comes last so every published field keeps its x-order.
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
    KONTEXT_INPUT_IMAGES,
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
