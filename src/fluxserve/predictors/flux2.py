"""FLUX.2 [dev] (``Flux2Pipeline``) and FLUX.2 [klein] 4B / 9B (``Flux2KleinPipeline``): text to image and
multi-reference editing, with Replicate's flux-2-dev and flux-2-klein inputs (:mod:`fluxserve.catalog.flux2`).

**Requests.** The reference images (``input_images`` for [dev], at most 4; ``images`` for klein, at most 5; none
means text to image) arrive as ``bytes``, are decoded by :func:`~fluxserve.predictors.images.decode_image` and
checked before anything runs: diffusers takes a reference only with at least 64 px per side and an aspect ratio of
at most 8:1, and a ``ValueError`` naming the input and its index (``images[1] is 40×300 px; …``) fails the
prediction instead. They go to the pipeline as a list, in the order given (the pipeline itself scales a reference
over 1 MP down to 1 MP). The output size is :func:`~fluxserve.catalog.sizes.flux2_size`: an aspect ratio at
``output_megapixels`` (klein; [dev] always 1 MP), ``match_input_image`` (the first reference's ratio; 1:1, said in
the logs, without one) or, on [dev], ``custom`` ``width`` × ``height``; sides are multiples of 32 on [dev] (its
``width``/``height`` description says so) and of 16 on klein (the pipeline's own multiple). [dev] runs 28 steps at
guidance 4.0 (Replicate's flux-2-dev has no steps or guidance input; 4.0 is the pipeline's default), the distilled
klein models 4 steps at guidance 1.0. The seed rule, ``Using seed:``, progress and cancel within a step are the
FLUX.1 predictors' (:mod:`~fluxserve.predictors.flux_base`). [dev] returns one file ``output.{fmt}`` (Replicate's
flux-2-dev output is one URI), klein a list of one, ``out-0.{fmt}``.

**Placement on CUDA** (bf16; the CPU runs everything in float32). FLUX.2 [dev] is a 32.2B transformer (64.4 GB
in bf16, 60.0 GiB) beside a 24B Mistral Small 3.x text encoder (48 GB, 44.7 GiB) and a small VAE (0.17 GB): the
three do not fit one 80 GB GPU. :meth:`Flux2Predictor._place_on_cuda` measures the loaded modules and applies
:func:`choose_placement`, with ``H`` = :attr:`~Flux2Predictor.gpu_headroom_bytes` for activations and the VAE
decode (8 GiB for [dev]: up to 4 references at 1 MP, ~21k tokens; 6 GiB for klein: up to 4 MP outputs, whose
VAE decode dominates):

1. ``whole``: the GPU's memory ≥ transformer + text encoder + VAE + H → everything on the GPU. [dev]: 60.0 + 44.7 +
   0.2 + 8 ≈ 113 GiB (121 GB; an H200 or B200). klein 4B: 7.3 + 7.5 (Qwen3 4B) + 0.2 + 6 ≈ 21 GiB (a 24 GB GPU);
   klein 9B: 16.9 + 15.3 (Qwen3 8B) + 0.2 + 6 ≈ 38 GiB (a 48 GB GPU).
2. ``split``: else, when another CUDA device has ≥ text encoder + 2 GiB and this one ≥ transformer + VAE + H, the
   text encoder runs on the other device and the transformer and VAE here: [dev] ≈ 68 GiB (73 GB) here + 47 GiB
   (50 GB) there, e.g. two 80 GB GPUs. Prompts are encoded by a text-only pipeline on the second device and
   handed over as ``prompt_embeds`` (the pipeline itself would compute on whichever device its text encoder is).
3. ``offload``: else ``enable_model_cpu_offload``: the text encoder and the transformer take turns on the GPU, so
   the peak is the larger of them + VAE + H ([dev] ≈ 68 GiB: one 80 GB GPU, with ≈ 105 GiB of CPU RAM holding
   the weights, and ~112 GB crossing PCIe on every request; klein 9B on a 24 GB GPU ≈ 23 GiB). Below that peak
   we still offload and log that large requests may run out of memory. go_fast is off with offload
   (:func:`~fluxserve.predictors.go_fast.steps.prepare` says so).

The FLUX.1 predictors keep their rule (model offload below 48 GiB). torch and diffusers are imported in methods only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fluxserve.catalog.sizes import CUSTOM, FLUX2_ASPECT_RATIOS, MATCH_INPUT_IMAGE, flux2_size
from fluxserve.predictors.base import PredictContext, WeightsUnavailable
from fluxserve.predictors.flux_base import DiffusersFluxPredictor, cpu_generator, step_callback
from fluxserve.predictors.go_fast.options import FastOptions
from fluxserve.predictors.images import decode_image, save_images

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

#: Both FLUX.2 pipelines encode prompts at 512 tokens.
MAX_SEQUENCE_LENGTH = 512
#: diffusers' limits on a reference image (``Flux2ImageProcessor.check_image_input``).
MIN_REFERENCE_SIDE = 64
MAX_REFERENCE_ASPECT = 8
#: Memory the second GPU keeps free besides the text encoder in the ``split`` placement.
TEXT_ENCODER_HEADROOM_BYTES = 2 * 1024**3

GiB = 1024**3


@dataclass(frozen=True)
class Placement:
    """Where the modules go on CUDA: ``mode`` ``whole``, ``split`` (the text encoder on ``text_device``) or
    ``offload``; ``reason`` is the setup log line."""

    mode: str
    reason: str
    text_device: str | None = None


def choose_placement(
    gpu_bytes: int,
    *,
    transformer: int,
    text_encoder: int,
    vae: int,
    headroom: int,
    second_gpu: tuple[str, int] | None = None,
) -> Placement:
    """The placement rule of the module docstring. Sizes are bytes; ``second_gpu`` is the other CUDA device with
    the most memory, as ``(device, total bytes)``, or None."""
    whole = transformer + text_encoder + vae + headroom
    if gpu_bytes >= whole:
        return Placement("whole", f"everything on the GPU ({_gib(whole)} needed, {_gib(gpu_bytes)} there)")
    denoiser = transformer + vae + headroom
    if second_gpu is not None:
        device, other_bytes = second_gpu
        if other_bytes >= text_encoder + TEXT_ENCODER_HEADROOM_BYTES and gpu_bytes >= denoiser:
            return Placement(
                "split",
                f"the text encoder on {device} ({_gib(text_encoder)}), the transformer and VAE here ({_gib(denoiser)} "
                f"needed, {_gib(gpu_bytes)} there); all of it would need {_gib(whole)}",
                text_device=device,
            )
    peak = max(transformer, text_encoder) + vae + headroom
    reason = f"model CPU offload: the text encoder and the transformer take turns ({_gib(peak)} peak)"
    if gpu_bytes < peak:
        reason += f"; this GPU has {_gib(gpu_bytes)}, so large requests may run out of memory"
    return Placement("offload", reason + f"; all of it would need {_gib(whole)}")


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def module_bytes(module: Any) -> int:
    """Bytes of ``module``'s parameters and buffers (0 for None)."""
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def check_reference(image: Image, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` when diffusers would refuse ``image`` as a FLUX.2 reference."""
    width, height = image.size
    if min(width, height) < MIN_REFERENCE_SIDE:
        raise ValueError(f"{field} is {width}×{height} px; FLUX.2 needs at least {MIN_REFERENCE_SIDE} px per side")
    aspect = max(width / height, height / width)
    if aspect > MAX_REFERENCE_ASPECT:
        raise ValueError(
            f"{field} is {width}×{height} px ({aspect:.1f}:1); "
            f"FLUX.2 takes aspect ratios up to {MAX_REFERENCE_ASPECT}:1"
        )


class Flux2Predictor(DiffusersFluxPredictor):
    """What FLUX.2 [dev] and [klein] share: placement, reference images, sizes and the pipeline call.

    Subclasses name the pipeline and weights, :attr:`images_field`, :attr:`size_multiple`, :attr:`default_steps`
    and :attr:`guidance`, and shape the output in ``predict``.
    """

    #: The input holding the reference images.
    images_field: ClassVar[str] = "images"
    #: Output sides are multiples of this.
    size_multiple: ClassVar[int] = 16
    #: Embedded guidance ([dev]) or CFG scale (klein; 1.0 turns CFG off).
    guidance: ClassVar[float] = 4.0
    #: Free GPU memory kept beside the weights when deciding the placement (see the module docstring).
    gpu_headroom_bytes: ClassVar[int] = 8 * GiB
    #: Denoising steps (no input sets them); an instance attribute may lower it (tests).
    default_steps: int = 28

    def __init__(self, weights: str, device: str | None = None, fast: FastOptions | None = None) -> None:
        super().__init__(weights, device, fast)
        #: With the ``split`` placement: the text-only pipeline on the second GPU that encodes prompts.
        self._text_pipe: Any = None
        self.placement: Placement | None = None

    # --- placement ---------------------------------------------------------------------------------------------

    def _place_on_cuda(self, pipe: Any) -> None:
        import torch

        device = torch.device(self.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        gpu_bytes = torch.cuda.get_device_properties(device).total_memory
        others = [
            (f"cuda:{i}", torch.cuda.get_device_properties(i).total_memory)
            for i in range(torch.cuda.device_count())
            if i != index
        ]
        placement = choose_placement(
            gpu_bytes,
            transformer=module_bytes(pipe.transformer),
            text_encoder=module_bytes(pipe.text_encoder),
            vae=module_bytes(pipe.vae),
            headroom=self.gpu_headroom_bytes,
            second_gpu=max(others, key=lambda o: o[1]) if others else None,
        )
        logger.info("%s placement: %s", self.label, placement.reason)
        self.placement = placement
        if placement.mode == "whole":
            pipe.to(self.device)
        elif placement.mode == "split" and placement.text_device is not None:
            self._split_text_encoder(pipe, placement.text_device)
            pipe.to(self.device)
        else:
            pipe.enable_model_cpu_offload(device=self.device)
            self.offloaded = True

    def _split_text_encoder(self, pipe: Any, text_device: str) -> None:
        """Move the text encoder to ``text_device`` in a text-only pipeline of its own and take it out of ``pipe``
        (which then reports, and computes on, the transformer's device)."""
        from fluxserve.predictors.go_fast.steps import init_config

        components = {**pipe.components, "vae": None, "transformer": None}
        text_pipe: Any = type(pipe)(**components, **init_config(pipe, components))
        text_pipe.text_encoder.to(text_device)
        text_pipe.set_progress_bar_config(disable=True)
        pipe.register_modules(text_encoder=None)
        self._text_pipe = text_pipe

    def _extra_pipes(self) -> list[Any]:
        return [self._text_pipe] if self._text_pipe is not None else []

    def onload(self) -> None:
        """Bring the weights back after :meth:`offload`, the text encoder to its own GPU with ``split``."""
        from fluxserve.predictors.residency import to_device

        fast = self._fast.pipe if self._fast is not None else None
        to_device([self._pipe, fast], self.device)
        if self._text_pipe is not None:
            to_device([self._text_pipe], str(self._text_pipe.text_encoder.device))

    def _prompt_kwargs(self, prompt: str) -> dict[str, Any]:
        """``prompt`` for the pipeline, or with ``split`` its embeddings, encoded on the text encoder's GPU."""
        if self._text_pipe is None:
            return {"prompt": prompt}
        import torch

        with torch.inference_mode():
            embeds, _ids = self._text_pipe.encode_prompt(
                prompt=prompt,
                device=self._text_pipe.text_encoder.device,
                max_sequence_length=MAX_SEQUENCE_LENGTH,
            )
        return {"prompt_embeds": embeds.to(self.device)}

    # --- go_fast -----------------------------------------------------------------------------------------------

    def _warmup_calls(self, scope: str) -> list[tuple[int, dict[str, Any]]]:
        """Text to image at 1 MP, 1:1 first; ``scope`` ``all`` adds every other aspect ratio."""
        ratios = ["1:1"] + ([r for r in FLUX2_ASPECT_RATIOS if r != "1:1"] if scope == "all" else [])
        calls = []
        for ratio in ratios:
            width, height = flux2_size(ratio, 1.0, multiple=self.size_multiple)
            kwargs = {
                **self._prompt_kwargs("warm-up"),
                "width": width,
                "height": height,
                "guidance_scale": self.guidance,
                "generator": cpu_generator(0),
                "max_sequence_length": MAX_SEQUENCE_LENGTH,
                "output_type": "pil",
            }
            calls.append((2, kwargs))
        return calls

    # --- per prediction ----------------------------------------------------------------------------------------

    def _references(self, inputs: dict[str, Any]) -> list[Image]:
        """Decode and check the reference images (ValueError naming ``<field>[i]`` for an unusable one)."""
        field = self.images_field
        images = [decode_image(data, f"{field}[{i}]") for i, data in enumerate(inputs.get(field) or [])]
        for i, image in enumerate(images):
            check_reference(image, f"{field}[{i}]")
        return images

    def _generate(self, inputs: dict[str, Any], ctx: PredictContext, *, megapixels: float) -> Image:
        """Run one request and return the image (the subclasses save it)."""
        import torch

        self._require_setup()
        ctx.check_canceled()
        references = self._references(inputs)
        start = time.perf_counter()
        ctx.log("Starting generate image")
        steps = int(self.default_steps)
        seed = self._log_preamble({**inputs, "num_inference_steps": steps}, ctx)
        width, height = self._size(inputs, references, megapixels, ctx)
        if references:
            sizes = ", ".join(f"{im.width}x{im.height}" for im in references)
            ctx.log(f"Using {len(references)} reference image{'s' if len(references) > 1 else ''} ({sizes})")
        ctx.log(f"Generating {width}x{height}, {steps} steps, guidance {self.guidance:g}")
        pipe, run_context = self._pipeline_for(bool(inputs.get("go_fast")), steps)
        with torch.inference_mode(), run_context:
            result = pipe(
                image=references or None,
                **self._prompt_kwargs(str(inputs["prompt"])),
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=self.guidance,
                generator=cpu_generator(seed),
                max_sequence_length=MAX_SEQUENCE_LENGTH,
                output_type="pil",
                callback_on_step_end=step_callback(ctx, steps),
                callback_on_step_end_tensor_inputs=["latents"],
            )
        ctx.log(f"generate image took {time.perf_counter() - start:.2f} seconds")
        image: Image = result.images[0]
        return image

    def _size(
        self, inputs: dict[str, Any], references: list[Image], megapixels: float, ctx: PredictContext
    ) -> tuple[int, int]:
        aspect_ratio = str(inputs.get("aspect_ratio") or "1:1")
        custom = (inputs.get("width"), inputs.get("height"))
        if aspect_ratio == MATCH_INPUT_IMAGE and not references:
            ctx.log(f"aspect_ratio {MATCH_INPUT_IMAGE} without an input image: using 1:1")
        if aspect_ratio != CUSTOM and custom != (None, None):
            ctx.log("width and height are only used with aspect_ratio custom; ignoring them")
        width, height = flux2_size(
            aspect_ratio,
            megapixels,
            reference=references[0].size if references else None,
            custom=custom,
            multiple=self.size_multiple,
        )
        if aspect_ratio == CUSTOM:
            asked = tuple(1024 if side is None else side for side in custom)
            if asked != (width, height):
                ctx.log(f"Custom size {asked[0]}x{asked[1]} rounded to multiples of {self.size_multiple}")
        return width, height


class Flux2DevPredictor(Flux2Predictor):
    """FLUX.2 [dev]: one image from a prompt and up to 4 reference images (``input_images``), 28 steps.

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.2-dev``) or a local diffusers checkout (e.g.
    ``build_tiny_pipeline(dir, kind="flux2-dev")``). ``device`` defaults to ``cuda`` when available, else ``cpu``.
    """

    label = "FLUX.2-dev"
    fast_family = "flux2-dev"
    pipeline_class = "Flux2Pipeline"
    model_ref = "black-forest-labs/flux-2-dev"
    hub_repo = "black-forest-labs/FLUX.2-dev"
    weights_setting = "flux2_dev_weights"
    license_name = "FLUX.2 [dev] Non-Commercial"
    images_field = "input_images"
    size_multiple = 32
    guidance = 4.0
    default_steps = 28

    def _load(self, dtype: Any) -> Any:
        try:
            return super()._load(dtype)
        except WeightsUnavailable as exc:
            if "Pixtral" not in str(exc) and "torchvision" not in str(exc):
                raise
            # The real checkout's tokenizer is a PixtralProcessor, whose image processor imports torchvision.
            raise WeightsUnavailable(
                f"{exc} FLUX.2 [dev]'s tokenizer (PixtralProcessor) needs torchvision built for this torch: on a GPU "
                "host, `pip install 'fluxserve[gpu]'` installs the matching version."
            ) from exc

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Path:
        """Generate one image and write it to ``ctx.output_dir/output.{fmt}``; return that one Path."""
        image = self._generate(inputs, ctx, megapixels=1.0)
        fmt = str(inputs["output_format"])
        path = ctx.output_dir / f"output.{fmt}"
        save_images([image], [path], fmt, int(inputs["output_quality"]))
        return path


class Flux2KleinPredictor(Flux2Predictor):
    """FLUX.2 [klein] 4B: one image (in a list) from a prompt and up to 5 reference images (``images``), 4 steps.

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.2-klein-4B``) or a local diffusers checkout (e.g.
    ``build_tiny_pipeline(dir, kind="klein")``). ``device`` defaults to ``cuda`` when available, else ``cpu``.
    """

    label = "FLUX.2-klein-4B"
    fast_family = "flux2-klein"
    pipeline_class = "Flux2KleinPipeline"
    model_ref = "black-forest-labs/flux-2-klein-4b"
    hub_repo = "black-forest-labs/FLUX.2-klein-4B"
    weights_setting = "flux2_klein_4b_weights"
    license_name = "Apache-2.0"
    download_help = (
        "download them with `fluxserve pull {model}` (or `huggingface-cli download {repo}`); the repo is not gated "
        "({license}), so no token is needed. Or"
    )
    images_field = "images"
    size_multiple = 16
    guidance = 1.0
    gpu_headroom_bytes = 6 * GiB
    default_steps = 4

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """Generate one image at ``output_megapixels`` and write it to ``ctx.output_dir/out-0.{fmt}``."""
        image = self._generate(inputs, ctx, megapixels=float(inputs.get("output_megapixels") or 1))
        fmt = str(inputs["output_format"])
        path = ctx.output_dir / f"out-0.{fmt}"
        save_images([image], [path], fmt, int(inputs["output_quality"]))
        return [path]


class Flux2Klein9BPredictor(Flux2KleinPredictor):
    """FLUX.2 [klein] 9B: klein 4B's behaviour with the 9B weights (gated, non-commercial license)."""

    label = "FLUX.2-klein-9B"
    model_ref = "black-forest-labs/flux-2-klein-9b"
    hub_repo = "black-forest-labs/FLUX.2-klein-9B"
    weights_setting = "flux2_klein_9b_weights"
    license_name = "FLUX.2 [klein] 9B Non-Commercial"
    download_help = DiffusersFluxPredictor.download_help
