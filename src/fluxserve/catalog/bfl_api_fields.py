"""The inputs of Black Forest Labs' API-only models as Replicate publishes them, one tuple per model, in
``x-order``: FLUX1.1 [pro], FLUX1.1 [pro] ultra, FLUX.1 [pro], FLUX.2 [pro], [flex] and [max], FLUX.1 Kontext [pro]
and [max]. :mod:`fluxserve.catalog.bfl_api` turns them into the OpenAPI documents the gateway ships.

These are facts (names, types, defaults, bounds, enum members and their order, x-order); descriptions are kept
as Replicate words them, since clients show them. Where each fact comes from is said next to each model; what
could not be confirmed is said there too.
"""

from __future__ import annotations

from fluxserve.catalog.fields import InputField

_MATCH = "match_input_image"

# --- words shared by several models ----------------------------------------------------------------------------

_QUALITY = (
    "Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is lowest quality. "
    "Not relevant for .png outputs"
)
_SEED = "Random seed. Set for reproducible generation"
_UPSAMPLING = "Automatically modify the prompt for more creative generation"
_TEXT_PROMPT = "Text prompt for image generation"


def _output_quality() -> InputField:
    return InputField("output_quality", "integer", _QUALITY, default=80, minimum=0, maximum=100)


# --- FLUX.1 [pro] family ---------------------------------------------------------------------------------------
# Source: the npm package all-the-public-replicate-models 1.352.0 (models.json, latest_version.openapi_schema of
# each model), compared field by field in tests/gateway/test_published_schemas.py.

_PRO_ASPECT_RATIOS = ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_ULTRA_ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
_REDUX = (
    "Image to use with Flux Redux. This is used together with the text prompt to guide the generation towards "
    "the composition of the image_prompt. Must be jpeg, png, gif, or webp."
)


def _pro_side(name: str) -> InputField:
    return InputField(
        name,
        "integer",
        f"{name.capitalize()} of the generated image in text-to-image mode. Only used when aspect_ratio=custom. "
        "Must be a multiple of 32 (if it's not, it will be rounded to nearest multiple of 32). "
        "Note: Ignored in img2img and inpainting modes.",
        minimum=256,
        maximum=1440,
    )


_PRO_PROMPT = InputField("prompt", "string", _TEXT_PROMPT, required=True)
_IMAGE_PROMPT = InputField("image_prompt", "uri", _REDUX)
_PRO_ASPECT_RATIO = InputField(
    "aspect_ratio", "string", "Aspect ratio for the generated image", default="1:1", choices=_PRO_ASPECT_RATIOS
)
_PRO_SAFETY = InputField(
    "safety_tolerance",
    "integer",
    "Safety tolerance, 1 is most strict and 6 is most permissive",
    default=2,
    minimum=1,
    maximum=6,
)
_PRO_UPSAMPLING = InputField("prompt_upsampling", "boolean", _UPSAMPLING, default=False)
_PRO_OUTPUT_FORMAT = InputField(
    "output_format", "string", "Format of the output images.", default="webp", choices=("webp", "jpg", "png")
)

FLUX_11_PRO_INPUTS: tuple[InputField, ...] = (
    _PRO_PROMPT,
    _IMAGE_PROMPT,
    _PRO_ASPECT_RATIO,
    _pro_side("width"),
    _pro_side("height"),
    _PRO_SAFETY,
    InputField("seed", "integer", _SEED),
    _PRO_UPSAMPLING,
    _PRO_OUTPUT_FORMAT,
    _output_quality(),
)

FLUX_11_PRO_ULTRA_INPUTS: tuple[InputField, ...] = (
    _PRO_PROMPT,
    _IMAGE_PROMPT,
    InputField(
        "image_prompt_strength",
        "number",
        "Blend between the prompt and the image prompt.",
        default=0.1,
        minimum=0,
        maximum=1,
    ),
    InputField(
        "aspect_ratio", "string", "Aspect ratio for the generated image", default="1:1", choices=_ULTRA_ASPECT_RATIOS
    ),
    _PRO_SAFETY,
    InputField("seed", "integer", _SEED),
    InputField("raw", "boolean", "Generate less processed, more natural-looking images", default=False),
    InputField("output_format", "string", "Format of the output images.", default="jpg", choices=("jpg", "png")),
)

FLUX_PRO_INPUTS: tuple[InputField, ...] = (
    _PRO_PROMPT,
    _IMAGE_PROMPT,
    _PRO_ASPECT_RATIO,
    _pro_side("width"),
    _pro_side("height"),
    InputField("steps", "integer", "Number of diffusion steps", default=25, minimum=1, maximum=50),
    InputField(
        "guidance",
        "number",
        "Controls the balance between adherence to the text prompt and image quality/diversity. Higher values make "
        "the output more closely match the prompt but may reduce overall image quality. Lower values allow for "
        "more creative freedom but might produce results less relevant to the prompt.",
        default=3,
        minimum=2,
        maximum=5,
    ),
    InputField(
        "interval",
        "number",
        "Interval is a setting that increases the variance in possible outputs letting the model be a tad more "
        "dynamic in what outputs it may produce in terms of composition, color, detail, and prompt interpretation. "
        "Setting this value low will ensure strong prompt following with more consistent outputs, setting it "
        "higher will produce more dynamic or varied outputs.",
        default=2,
        minimum=1,
        maximum=4,
    ),
    _PRO_SAFETY,
    _PRO_UPSAMPLING,  # flux-pro asks for upsampling before the seed; flux-1.1-pro after it
    InputField("seed", "integer", _SEED),
    _PRO_OUTPUT_FORMAT,
    _output_quality(),
)

# --- FLUX.2 [pro], [flex], [max] -------------------------------------------------------------------------------
# Sources (fields in x-order, types, defaults, bounds, descriptions, output = one URI):
#   pro:  https://replicate.com/black-forest-labs/flux-2-pro/versions/285631b5656a1839331cd9af0d82da820e2075db12046d1d061c681b2f206bc6/api
#   max:  https://replicate.com/black-forest-labs/flux-2-max/versions/9c23b0aaa98765a9676dbdda58b9c9915627751300747bad54cb1c11b135d3ca/api
#   flex: https://replicate.com/black-forest-labs/flux-2-flex/api/learn-more (Replicate's model page for LLMs: the
#         fields in order with descriptions) and cinemasetfree.com/guides/generators/black-forest-labs/flux-2-flex
#         (defaults, bounds, enum members as Replicate's schema lists them); no version page of flex was found.
# Enum members, in order: aspect_ratio and resolution as listed on cinemasetfree.com's pages for flux-2-pro and
# flux-2-flex, which agree with nodetool's generated Replicate nodes and with a copy of flex's openapi_schema in
# genfeed's docs (x-order included: prompt 0 … output_quality 12; width and height "nullable": true).
# Not confirmed: whether width/height are "nullable" on pro and max (flex's copy shows it; same predictor, so
# assumed); flex's width/height wording ("multiple of 16" on Replicate's current model page, "multiple of 32" in
# the older copies: the current one is used). pro's version page says "multiple of 32" while Replicate's current
# model page for pro says 16: a newer pro version may exist, whose id was not found (285631b5 is the newest seen).

FLUX2_ASPECT_RATIOS: tuple[str, ...] = (
    _MATCH,
    "custom",
    "1:1",
    "16:9",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "9:16",
    "3:4",
    "4:3",
)
FLUX2_RESOLUTIONS: tuple[str, ...] = (_MATCH, "0.5 MP", "1 MP", "2 MP", "4 MP")
FLUX2_PRO_MAX_IMAGES = 8
FLUX2_MAX_MAX_IMAGES = 8
FLUX2_FLEX_MAX_IMAGES = 10
#: Custom width and height bounds of the FLUX.2 API models.
FLUX2_MIN_SIDE = 256
FLUX2_MAX_SIDE = 2048
#: Fields whose schema property is ``"nullable": true`` (Cog's ``Optional[int] = None``).
FLUX2_NULLABLE = ("width", "height")


def _flux2_images(limit: int) -> InputField:
    return InputField(
        "input_images",
        "uri_array",
        f"List of input images for image-to-image generation. Maximum {limit} images. Must be jpeg, png, gif, or webp.",
        default=[],
        max_items=limit,
    )


def _flux2_side(name: str, multiple: int) -> InputField:
    return InputField(
        name,
        "integer",
        f"{name.capitalize()} of the generated image. Only used when aspect_ratio=custom. Must be a multiple of "
        f"{multiple} (if it's not, it will be rounded to nearest multiple of {multiple}).",
        minimum=FLUX2_MIN_SIDE,
        maximum=FLUX2_MAX_SIDE,
    )


def _flux2_inputs(limit: int, multiple: int, extra: tuple[InputField, ...] = ()) -> tuple[InputField, ...]:
    """FLUX.2 [pro]'s fields; [flex] adds ``extra`` (upsampling, steps, guidance) after ``seed``."""
    return (
        InputField("prompt", "string", _TEXT_PROMPT, required=True),
        _flux2_images(limit),
        InputField(
            "aspect_ratio",
            "string",
            "Aspect ratio for the generated image. Use 'match_input_image' to match the first input image's aspect "
            "ratio.",
            default="1:1",
            choices=FLUX2_ASPECT_RATIOS,
        ),
        InputField(
            "resolution",
            "string",
            "Resolution in megapixels. Up to 4 MP is possible, but 2 MP or below is recommended. The maximum image "
            "size is 2048x2048, which means that high-resolution images may not respect the resolution if aspect "
            "ratio is not 1:1.\n\nResolution is not used when aspect_ratio is 'custom'. When aspect_ratio is "
            "'match_input_image', use 'match_input_image' to match the input image's resolution (clamped to 0.5-4 "
            "MP).",
            default="1 MP",
            choices=FLUX2_RESOLUTIONS,
        ),
        _flux2_side("width", multiple),
        _flux2_side("height", multiple),
        InputField(
            "safety_tolerance",
            "integer",
            "Safety tolerance, 1 is most strict and 5 is most permissive",
            default=2,
            minimum=1,
            maximum=5,
        ),
        InputField("seed", "integer", _SEED),
        *extra,
        InputField(
            "output_format", "string", "Format of the output images.", default="webp", choices=("webp", "jpg", "png")
        ),
        _output_quality(),
    )


FLUX2_PRO_INPUTS = _flux2_inputs(FLUX2_PRO_MAX_IMAGES, 32)
FLUX2_MAX_INPUTS = _flux2_inputs(FLUX2_MAX_MAX_IMAGES, 16)
FLUX2_FLEX_INPUTS = _flux2_inputs(
    FLUX2_FLEX_MAX_IMAGES,
    16,
    (
        InputField("prompt_upsampling", "boolean", _UPSAMPLING, default=True),
        InputField("steps", "integer", "Number of inference steps", default=30, minimum=1, maximum=50),
        InputField(
            "guidance",
            "number",
            "Guidance scale for generation. Controls how closely the output follows the prompt",
            default=4.5,
            minimum=1.5,
            maximum=10,
        ),
    ),
)

# --- FLUX.1 Kontext [pro] and [max] ----------------------------------------------------------------------------
# Sources:
#   pro: https://replicate.com/black-forest-labs/flux-kontext-pro/versions/569705b35f79b1160d51de1d0e3955626af86c77a034a16e89010dbdde5ad312/api
#        (fields in this order, defaults, safety_tolerance max 6); Replicate's current model page for LLMs
#        (replicate.com/black-forest-labs/flux-kontext-pro/api/learn-more) lists the fields in the same order, so
#        569705b3 is taken as the latest version. An older version (0a138193…) ordered them as [max] does below.
#   max: a copy of Replicate's API page of flux-kontext-max (Input schema with x-order, "nullable" on seed and
#        input_image, enum members in order) in a public repository's docs (2025-08); versions 0b9c317b… (the id
#        most often pinned in public code) and b94039e5… (an early one with four fields, has a version page).
#   both: aspect_ratio members (14, match_input_image first) and output_format jpg/png, default png, as that copy
#        and api.core.today's copy of kontext-pro's schema list them; safety_tolerance 0–6, default 2.
# Not confirmed: kontext-pro's x-order numbers (its page shows the order only: 0, 1, … in that order is assumed)
# and "nullable" on its seed and input_image (assumed as [max]'s); that 0b9c317b… is [max]'s latest version.

KONTEXT_ASPECT_RATIOS: tuple[str, ...] = (
    _MATCH,
    "1:1",
    "16:9",
    "9:16",
    "4:3",
    "3:4",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "21:9",
    "9:21",
    "2:1",
    "1:2",
)
KONTEXT_NULLABLE = ("seed", "input_image")

_K_PROMPT = InputField(
    "prompt",
    "string",
    "Text description of what you want to generate, or the instruction on how to edit the given image.",
    required=True,
)
_K_IMAGE = InputField("input_image", "uri", "Image to use as reference. Must be jpeg, png, gif, or webp.")
_K_ASPECT_RATIO = InputField(
    "aspect_ratio",
    "string",
    "Aspect ratio of the generated image. Use 'match_input_image' to match the aspect ratio of the input image.",
    default=_MATCH,
    choices=KONTEXT_ASPECT_RATIOS,
)
_K_UPSAMPLING = InputField("prompt_upsampling", "boolean", "Automatic prompt improvement", default=False)
_K_SEED = InputField("seed", "integer", _SEED)
_K_OUTPUT_FORMAT = InputField(
    "output_format", "string", "Output format for the generated image", default="png", choices=("jpg", "png")
)
_K_SAFETY = InputField(
    "safety_tolerance",
    "integer",
    "Safety tolerance, 0 is most strict and 6 is most permissive. 2 is currently the maximum allowed when input "
    "images are used.",
    default=2,
    minimum=0,
    maximum=6,
)

KONTEXT_PRO_INPUTS: tuple[InputField, ...] = (
    _K_ASPECT_RATIO,
    _K_OUTPUT_FORMAT,
    _K_SEED,
    _K_PROMPT,
    _K_IMAGE,
    _K_SAFETY,
    _K_UPSAMPLING,
)
KONTEXT_MAX_INPUTS: tuple[InputField, ...] = (
    _K_PROMPT,
    _K_IMAGE,
    _K_ASPECT_RATIO,
    _K_UPSAMPLING,
    _K_SEED,
    _K_OUTPUT_FORMAT,
    _K_SAFETY,
)
