"""black-forest-labs/flux-dev on diffusers' ``FluxPipeline`` (text to image) and ``FluxImg2ImgPipeline``.

Behaviour follows Replicate's cog-flux ``DevPredictor`` bf16 path (``reference/flux-models.md`` §1.2, §1.5, §2):
guidance is the embedded-guidance scalar (no CFG), T5 runs at 512 tokens, the seed rule and ``Using seed:``
line are schnell's. With ``image`` it runs image to image: the output follows the input's size, scaled down to
fit 1440×1440 and rounded to multiples of 16 (:func:`~fluxserve.catalog.sizes.img2img_size`), and
``prompt_strength`` decides how many of the steps run (diffusers' rule, the same as cog-flux's
``t_idx = int((1 - strength) * steps)``). ``prompt_strength`` 0 would run no step at all, which diffusers
refuses; we run one step, the smallest change, and say so in the logs.

The ``image`` input arrives as ``bytes`` (the worker fetched it) and is decoded by
:func:`~fluxserve.predictors.images.decode_image`. torch and diffusers are imported in methods only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fluxserve.catalog.sizes import image_size, img2img_size
from fluxserve.predictors.base import PredictContext
from fluxserve.predictors.flux_base import DiffusersFluxPredictor, cpu_generator, flux_warmup_calls, step_callback
from fluxserve.predictors.go_fast.options import FastOptions
from fluxserve.predictors.images import decode_image, save_images

#: dev and kontext encode prompts with T5 at 512 tokens (schnell: 256).
T5_MAX_SEQUENCE_LENGTH = 512
#: What cog-flux prints when go_fast meets img2img on a GPU (its fp8 path has no img2img).
IMG2IMG_BF16_ONLY = "img2img not supported with fp8 quantization; running with bf16"


def _img2img_from(pipe: Any) -> Any:
    """A ``FluxImg2ImgPipeline`` on the very modules of ``pipe``: no second copy of the weights.

    Not ``from_pipe``: it re-casts the shared modules (and warns about it). The scheduler is a fresh instance
    because ``set_timesteps`` keeps state in it.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline

    components = dict(pipe.components)
    components["scheduler"] = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    img2img: Any = FluxImg2ImgPipeline(**components)
    img2img.set_progress_bar_config(disable=True)
    return img2img


class FluxDevPredictor(DiffusersFluxPredictor):
    """FLUX.1 [dev] text to image, and image to image when the ``image`` input is given.

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.1-dev``) or a local diffusers checkout
    (e.g. ``build_tiny_pipeline(dir, kind="dev")``). ``device`` defaults to ``cuda`` when available, else ``cpu``.
    """

    label = "FLUX.1-dev"
    fast_family = "dev"
    pipeline_class = "FluxPipeline"
    model_ref = "black-forest-labs/flux-dev"
    hub_repo = "black-forest-labs/FLUX.1-dev"
    weights_setting = "flux_dev_weights"
    license_name = "FLUX.1 [dev]"

    def __init__(self, weights: str, device: str | None = None, fast: FastOptions | None = None) -> None:
        super().__init__(weights, device, fast)
        self._img2img: Any = None

    def _after_load(self, pipe: Any) -> None:
        self._img2img = _img2img_from(pipe)

    def _warmup_calls(self, scope: str) -> list[tuple[int, dict[str, Any]]]:
        # img2img always runs in bf16 (as in cog-flux), so only text to image needs warming.
        return flux_warmup_calls(scope, guidance=3.0, max_sequence_length=T5_MAX_SEQUENCE_LENGTH)

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """Generate ``num_outputs`` images and write them to ``ctx.output_dir/out-{i}.{fmt}``.

        ``inputs["image"]`` is the input image's file content (``bytes``) or None.
        """
        import torch

        pipe = self._require_setup()
        ctx.check_canceled()
        image_bytes: bytes | None = inputs.get("image")
        init_image = decode_image(image_bytes, "image") if image_bytes is not None else None
        seed = self._log_preamble(inputs, ctx, bf16_only=IMG2IMG_BF16_ONLY if init_image is not None else None)

        steps = int(inputs["num_inference_steps"])
        common: dict[str, Any] = {
            "prompt": inputs["prompt"],
            "num_inference_steps": steps,
            "guidance_scale": float(inputs["guidance"]),
            "num_images_per_prompt": int(inputs["num_outputs"]),
            "generator": cpu_generator(seed),
            "max_sequence_length": T5_MAX_SEQUENCE_LENGTH,
            "output_type": "pil",
            "callback_on_step_end": step_callback(ctx, steps),
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        with torch.inference_mode():
            if init_image is None:
                width, height = image_size(inputs["aspect_ratio"], inputs["megapixels"])
                text2img, run_context = self._pipeline_for(bool(inputs.get("go_fast")), steps)
                with run_context:
                    result = text2img(height=height, width=width, **common)
            else:
                init_image, strength = self._prepare_img2img(init_image, float(inputs["prompt_strength"]), steps, ctx)
                try:
                    result = self._img2img(
                        image=init_image, height=init_image.height, width=init_image.width, strength=strength, **common
                    )
                finally:
                    if self.offloaded:
                        # The offload hooks belong to the text-to-image pipeline: let it put every model back.
                        pipe.maybe_free_model_hooks()
        images: list[Any] = list(result.images)
        fmt = str(inputs["output_format"])
        paths = [ctx.output_dir / f"out-{i}.{fmt}" for i in range(len(images))]
        save_images(images, paths, fmt, int(inputs["output_quality"]))
        return paths

    @staticmethod
    def _prepare_img2img(image: Any, strength: float, steps: int, ctx: PredictContext) -> tuple[Any, float]:
        """Resize the input to the output size (logging as cog-flux does) and make ``strength`` run ≥ 1 step."""
        from PIL import Image

        ctx.log("Image detected - setting to img2img mode")
        ctx.log(f"Input image size: {image.width}x{image.height}")
        width, height = img2img_size(image.width, image.height)
        ctx.log(f"Input image size set to: {width}x{height}")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        if strength <= 0:
            # diffusers (like cog-flux) skips the first int(steps * (1 - strength)) steps: any strength > 0 leaves
            # at least one, 0 leaves none, which diffusers refuses.
            strength = 1 / steps
            ctx.log("prompt_strength 0 leaves no denoising step; running 1 step, the smallest change")
        return image, strength


class FluxKreaDevPredictor(FluxDevPredictor):
    """FLUX.1 Krea [dev]: FLUX.1 [dev]'s architecture and pipeline with Krea's weights, so the same behaviour
    (text to image, and image to image with ``image``) and Replicate's flux-krea-dev inputs, which are flux-dev's."""

    label = "FLUX.1-Krea-dev"
    model_ref = "black-forest-labs/flux-krea-dev"
    hub_repo = "black-forest-labs/FLUX.1-Krea-dev"
    weights_setting = "flux_krea_dev_weights"
    license_name = "FLUX.1 [dev] Non-Commercial"
