"""black-forest-labs/flux-schnell on diffusers' ``FluxPipeline``.

Behaviour follows Replicate's cog-flux ``SchnellPredictor`` bf16 path where it is visible to users
(seed rule and ``Using seed:`` line, T5 at 256 tokens, ``out-{i}.{fmt}`` files); see
``reference/flux-models.md`` §1.1 and §2. torch and diffusers are imported in :meth:`setup` only, so
this module can be imported by processes that must never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fluxserve.catalog.sizes import image_size
from fluxserve.predictors.base import PredictContext
from fluxserve.predictors.flux_base import DiffusersFluxPredictor, cpu_generator, flux_warmup_calls, step_callback
from fluxserve.predictors.images import save_images

#: Replicate's schnell encodes prompts with T5 at 256 tokens (dev and kontext use 512).
T5_MAX_SEQUENCE_LENGTH = 256


class FluxSchnellPredictor(DiffusersFluxPredictor):
    """FLUX.1 [schnell] text-to-image through ``diffusers.FluxPipeline``.

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.1-schnell``) or a local diffusers
    checkout (such as one made by :func:`fluxserve.predictors.tiny.build_tiny_pipeline`). ``device``
    defaults to ``cuda`` when available, else ``cpu``; CUDA runs in bfloat16, the CPU in float32.
    """

    label = "FLUX.1-schnell"
    fast_family = "schnell"
    pipeline_class = "FluxPipeline"
    model_ref = "black-forest-labs/flux-schnell"
    hub_repo = "black-forest-labs/FLUX.1-schnell"
    weights_setting = "flux_schnell_weights"
    # schnell's help words the gated repo in one parenthesis and names no license: kept as users have seen it.
    download_help = (
        "download them with `fluxserve pull {model}` or `huggingface-cli download {repo}` (the repo is gated: "
        "accept its license on huggingface.co and log in with `huggingface-cli login` or set HF_TOKEN); or"
    )

    def _warmup_calls(self, scope: str) -> list[tuple[int, dict[str, Any]]]:
        return flux_warmup_calls(scope, guidance=0.0, max_sequence_length=T5_MAX_SEQUENCE_LENGTH)

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """Generate ``num_outputs`` images and write them to ``ctx.output_dir/out-{i}.{fmt}``."""
        import torch

        self._require_setup()
        ctx.check_canceled()
        seed = self._log_preamble(inputs, ctx)

        width, height = image_size(inputs["aspect_ratio"], inputs["megapixels"])
        steps = int(inputs["num_inference_steps"])
        pipe, run_context = self._pipeline_for(bool(inputs.get("go_fast")), steps)
        with torch.inference_mode(), run_context:
            result = pipe(
                prompt=inputs["prompt"],
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=0.0,
                num_images_per_prompt=int(inputs["num_outputs"]),
                generator=cpu_generator(seed),
                max_sequence_length=T5_MAX_SEQUENCE_LENGTH,
                output_type="pil",
                callback_on_step_end=step_callback(ctx, steps),
                callback_on_step_end_tensor_inputs=["latents"],
            )
        images: list[Any] = list(result.images)
        fmt = str(inputs["output_format"])
        paths = [ctx.output_dir / f"out-{i}.{fmt}" for i in range(len(images))]
        save_images(images, paths, fmt, int(inputs["output_quality"]))
        return paths
