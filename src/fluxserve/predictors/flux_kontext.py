"""black-forest-labs/flux-kontext-dev on diffusers' ``FluxKontextPipeline``: edit an image by instruction.

Behaviour follows Replicate's cog-flux-kontext (``reference/flux-models.md`` §1.3, §1.5, §2):

* **Reference image.** The input image is snapped to the entry of
  :data:`~fluxserve.catalog.sizes.PREFERRED_KONTEXT_RESOLUTIONS` closest in aspect ratio and resized to it
  (LANCZOS, aspect not kept); that is the conditioning image Kontext sees.
* **Output size.** ``aspect_ratio="match_input_image"`` (the default): the snapped size. Any other ratio: the
  Kontext table :data:`~fluxserve.catalog.sizes.KONTEXT_ASPECT_RATIOS` (1:1 is 1024×1024, 16:9 1328×800, …).
* **One output.** ``output.{fmt}``, returned as a single Path (the output schema is one URI, not a list).
* Seed rule and ``Using seed:`` as in cog-flux; the run is wrapped in ``Starting generate image`` /
  ``generate image took X.XX seconds`` log lines; T5 at 512 tokens; guidance is the embedded scalar.

**Several reference images.** Besides ``input_image`` we take ``input_images``, a list of up to 4 images (as
CometAPI documents for Kontext). Exactly one of the two must be given. The images are combined into one
reference image and everything above then applies to that composite: each image is scaled (keeping its aspect
ratio) to one common height and they are placed side by side, left to right in the order given, with no gaps.
The common height is the tallest input's, but at most 1024 px and low enough that the composite is at most
4096 px wide. A one-image list is exactly ``input_image``. The composite's aspect ratio is the sum of the
images' ratios, so with several images it is wide; Kontext's widest trained size is 1568×672 (21:9), and a
wider composite is squeezed horizontally to fit it, as any wide ``input_image`` would be.

Image inputs arrive as ``bytes`` (``list[bytes]`` for ``input_images``), fetched by the worker, and are decoded by
:func:`~fluxserve.predictors.images.decode_image`. torch and diffusers are imported in methods only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxserve.catalog.flux import kontext_input_errors
from fluxserve.catalog.sizes import PREFERRED_KONTEXT_RESOLUTIONS, kontext_image_size, kontext_snap
from fluxserve.predictors.base import PredictContext
from fluxserve.predictors.flux_base import DiffusersFluxPredictor, cpu_generator, step_callback
from fluxserve.predictors.images import decode_image, save_images

if TYPE_CHECKING:
    from PIL.Image import Image

#: cog-flux-kontext encodes prompts with T5 at 512 tokens.
T5_MAX_SEQUENCE_LENGTH = 512
#: Limits of the ``input_images`` composite (see the module docstring).
COMPOSITE_MAX_HEIGHT = 1024
COMPOSITE_MAX_WIDTH = 4096


def combine_input_images(images: Sequence[Image]) -> Image:
    """Place ``images`` side by side at one common height (the module docstring has the rule); one is returned as is."""
    from PIL import Image as PILImage

    if not images:
        raise ValueError("combine_input_images needs at least one image")
    if len(images) == 1:
        return images[0]
    total_aspect = sum(im.width / im.height for im in images)
    height = max(1, min(max(im.height for im in images), COMPOSITE_MAX_HEIGHT, int(COMPOSITE_MAX_WIDTH / total_aspect)))
    scaled = [
        im
        if im.height == height
        else im.resize((max(1, round(im.width * height / im.height)), height), PILImage.Resampling.LANCZOS)
        for im in images
    ]
    composite = PILImage.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        composite.paste(im, (x, 0))
        x += im.width
    return composite


class FluxKontextPredictor(DiffusersFluxPredictor):
    """FLUX.1 Kontext [dev]: one output image from a prompt and a reference image (or several, combined).

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.1-Kontext-dev``) or a local diffusers checkout
    (e.g. ``build_tiny_pipeline(dir, kind="kontext")``). ``device`` defaults to ``cuda`` when available, else ``cpu``.
    """

    label = "FLUX.1-Kontext-dev"
    fast_family = "kontext"
    pipeline_class = "FluxKontextPipeline"
    model_ref = "black-forest-labs/flux-kontext-dev"
    hub_repo = "black-forest-labs/FLUX.1-Kontext-dev"
    weights_setting = "flux_kontext_dev_weights"
    license_name = "FLUX.1 Kontext [dev]"

    def _warmup_calls(self, scope: str) -> list[tuple[int, dict[str, Any]]]:
        """Each preferred resolution with a reference image of the same size (``match_input_image``, the default);
        1024×1024 first. Other aspect ratios pair these references with table sizes and run on the same graphs."""
        from PIL import Image as PILImage

        sizes = [(1024, 1024)]
        if scope == "all":
            sizes += [s for s in PREFERRED_KONTEXT_RESOLUTIONS if s != (1024, 1024)]
        calls = []
        for width, height in sizes:
            kwargs = {
                "image": PILImage.new("RGB", (width, height), (127, 127, 127)),
                "prompt": "warm-up",
                "width": width,
                "height": height,
                "max_area": width * height,
                "_auto_resize": False,
                "guidance_scale": 2.5,
                "generator": cpu_generator(0),
                "max_sequence_length": T5_MAX_SEQUENCE_LENGTH,
                "output_type": "pil",
            }
            calls.append((2, kwargs))
        return calls

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Path:
        """Generate one image and write it to ``ctx.output_dir/output.{fmt}``.

        ``inputs["input_image"]`` is one file's content (``bytes``) and ``inputs["input_images"]`` a list of them;
        exactly one of the two must be given (else ``ValueError`` naming both).
        """
        import torch
        from PIL import Image as PILImage

        self._require_setup()
        ctx.check_canceled()
        errors = kontext_input_errors(inputs)
        if errors:
            raise ValueError(errors[0].description)
        reference = self._reference_image(inputs)

        start = time.perf_counter()
        ctx.log("Starting generate image")
        seed = self._log_preamble(inputs, ctx)
        cond_width, cond_height = kontext_snap(reference.width, reference.height)
        width, height = kontext_image_size(str(inputs["aspect_ratio"]), reference.size)
        if reference.size != (cond_width, cond_height):
            reference = reference.resize((cond_width, cond_height), PILImage.Resampling.LANCZOS)
        steps = int(inputs["num_inference_steps"])
        pipe, run_context = self._pipeline_for(bool(inputs.get("go_fast")), steps)
        with torch.inference_mode(), run_context:
            result = pipe(
                image=reference,
                prompt=inputs["prompt"],
                height=height,
                width=width,
                # diffusers rescales (height, width) to max_area; at exactly their product it keeps them.
                max_area=width * height,
                # We have already snapped and resized the reference image, as cog-flux-kontext does.
                _auto_resize=False,
                num_inference_steps=steps,
                guidance_scale=float(inputs["guidance"]),
                generator=cpu_generator(seed),
                max_sequence_length=T5_MAX_SEQUENCE_LENGTH,
                output_type="pil",
                callback_on_step_end=step_callback(ctx, steps),
                callback_on_step_end_tensor_inputs=["latents"],
            )
        fmt = str(inputs["output_format"])
        path = ctx.output_dir / f"output.{fmt}"
        save_images([result.images[0]], [path], fmt, int(inputs["output_quality"]))
        ctx.log(f"generate image took {time.perf_counter() - start:.2f} seconds")
        return path

    @staticmethod
    def _reference_image(inputs: dict[str, Any]) -> Image:
        """Decode ``input_image``, or decode and combine ``input_images``."""
        if inputs.get("input_image") is not None:
            return decode_image(inputs["input_image"], "input_image")
        blobs: list[bytes] = list(inputs["input_images"])
        return combine_input_images([decode_image(data, f"input_images[{i}]") for i, data in enumerate(blobs)])
