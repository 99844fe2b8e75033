"""The inputs of the current open FLUX models as Replicate publishes them: FLUX.2 [dev], FLUX.2 [klein] 4B and
9B, and FLUX.1 Krea [dev]; and the license facts of every local model.

Sources (the npm package ``all-the-public-replicate-models`` 1.352.0 predates all four, so Replicate's version
pages are the reference):

* flux-2-dev: replicate.com/black-forest-labs/flux-2-dev/versions/7bba46bd…/api (fields, defaults, bounds,
  descriptions, output: one URI); the ``aspect_ratio`` and ``output_format`` members as listed on the model page.
* flux-2-klein-4b: replicate.com/black-forest-labs/flux-2-klein-4b/versions/8e9c42d7…/api (fields, defaults,
  descriptions, output: an array of URIs). The page shows the defaults of ``aspect_ratio`` ("1:1") and
  ``output_megapixels`` ("1") but not their members; we take flux-2-dev's ratios (without ``custom``) and the
  megapixel steps 0.25, 0.5, 1, 2 and 4 — unconfirmed, named as such in tests/catalog/test_flux2_schemas.py.
* flux-2-klein-9b: no version page was found; klein-9b-base's page (b037b94b…) shows klein-4b's fields plus
  ``guidance``, which the distilled model has no use for (4 steps at guidance 1), so 9b takes klein-4b's fields.
* flux-krea-dev: flux-dev's fields (text to image and img2img); the guidance and go_fast descriptions as
  third-party copies of its schema give them (api.core.today's llms.txt for the model).
"""

from __future__ import annotations

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.flux import DISABLE_SAFETY_CHECKER, FLUX_DEV_INPUTS, SEED
from fluxserve.catalog.sizes import CUSTOM, FLUX2_ASPECT_RATIOS, MATCH_INPUT_IMAGE, OUTPUT_FORMATS

#: The ``output_megapixels`` choices of klein (see the module docstring: members unconfirmed).
KLEIN_MEGAPIXELS: tuple[str, ...] = ("0.25", "0.5", "1", "2", "4")
#: Reference images each model takes (from the field descriptions on Replicate).
FLUX2_DEV_MAX_IMAGES = 4
KLEIN_MAX_IMAGES = 5
#: flux-2-dev's custom width and height bounds.
FLUX2_DEV_MIN_SIDE = 256
FLUX2_DEV_MAX_SIDE = 1440

_FAST_DESCRIPTION = "Run faster predictions with additional optimizations."
_QUALITY_DESCRIPTION = (
    "Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is lowest quality. "
    "Not relevant for .png outputs."
)


def _side(name: str) -> InputField:
    return InputField(
        name,
        "integer",
        f"{name.capitalize()} of the generated image in text-to-image mode. Only used when aspect_ratio=custom. "
        "Must be a multiple of 32 (if it's not, it will be rounded to nearest multiple of 32).",
        minimum=FLUX2_DEV_MIN_SIDE,
        maximum=FLUX2_DEV_MAX_SIDE,
    )


FLUX2_DEV_INPUTS: tuple[InputField, ...] = (
    InputField("prompt", "string", "Text description of the image to generate.", required=True),
    InputField(
        "input_images",
        "uri_array",
        f"List of input images for image-to-image generation. Maximum {FLUX2_DEV_MAX_IMAGES} images. "
        "Must be jpeg, png, gif, or webp.",
        default=[],
        max_items=FLUX2_DEV_MAX_IMAGES,
    ),
    InputField("go_fast", "boolean", _FAST_DESCRIPTION, default=True),
    InputField(
        "aspect_ratio",
        "string",
        "Aspect ratio for the generated image. Use 'match_input_image' to match the first input image's aspect ratio.",
        default="1:1",
        choices=(MATCH_INPUT_IMAGE, CUSTOM, *FLUX2_ASPECT_RATIOS),
    ),
    _side("width"),
    _side("height"),
    InputField("seed", "integer", "Random seed. Set for reproducible generation."),
    InputField("output_format", "string", "Format of the output images.", default="webp", choices=OUTPUT_FORMATS),
    InputField("output_quality", "integer", _QUALITY_DESCRIPTION, default=80, minimum=0, maximum=100),
    DISABLE_SAFETY_CHECKER,
)

FLUX2_KLEIN_INPUTS: tuple[InputField, ...] = (
    InputField("prompt", "string", "Text prompt for image generation.", required=True),
    InputField(
        "images",
        "uri_array",
        f"List of input images for image-to-image generation. Maximum {KLEIN_MAX_IMAGES} images. "
        "Must be jpeg, png, gif, or webp.",
        default=[],
        max_items=KLEIN_MAX_IMAGES,
    ),
    InputField(
        "aspect_ratio",
        "string",
        "Aspect ratio for the generated image. Use 'match_input_image' to match the aspect ratio of the first "
        "input image.",
        default="1:1",
        choices=(MATCH_INPUT_IMAGE, *FLUX2_ASPECT_RATIOS),
    ),
    InputField(
        "output_megapixels",
        "string",
        "Resolution of the output image in megapixels",
        default="1",
        choices=KLEIN_MEGAPIXELS,
    ),
    SEED,
    InputField("go_fast", "boolean", _FAST_DESCRIPTION, default=False),
    InputField("output_format", "string", "Format of the output images", default="jpg", choices=OUTPUT_FORMATS),
    InputField("output_quality", "integer", _QUALITY_DESCRIPTION, default=95, minimum=0, maximum=100),
    DISABLE_SAFETY_CHECKER,
)


def _krea_field(field: InputField) -> InputField:
    """flux-dev's field as flux-krea-dev words it (two descriptions differ)."""
    if field.name == "guidance":
        return InputField(
            "guidance",
            "number",
            "Guidance for generated image. Lower values can give more realistic images. Good values to try are 2, "
            "2.5, 3 and 3.5",
            default=field.default,
            minimum=field.minimum,
            maximum=field.maximum,
        )
    if field.name == "go_fast":
        return InputField("go_fast", "boolean", _FAST_DESCRIPTION, default=True)
    return field


FLUX_KREA_DEV_INPUTS: tuple[InputField, ...] = tuple(_krea_field(f) for f in FLUX_DEV_INPUTS)

# --- licenses ------------------------------------------------------------------------------------------------

APACHE_2 = "https://www.apache.org/licenses/LICENSE-2.0"
FLUX1_DEV_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"
FLUX1_KONTEXT_DEV_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.1-Kontext-dev/blob/main/LICENSE.md"
FLUX1_KREA_DEV_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.1-Krea-dev/blob/main/LICENSE.md"
FLUX2_DEV_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.2-dev/blob/main/LICENSE.txt"
FLUX2_KLEIN_9B_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.2-klein-9B/blob/main/LICENSE.md"
