"""The base of the diffusers FLUX predictors: loading, device placement, residency, go_fast, seeds and progress.

Behaviour follows Replicate's cog-flux where users can see it (``reference/flux-models.md`` §2): the seed rule
and its ``Using seed:`` line, CUDA in bfloat16 with model offload below 48 GiB. A subclass names its pipeline
class and weights in class attributes (:class:`DiffusersFluxPredictor`) and adds ``predict``. torch and
diffusers are imported inside functions only, so importing this module never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from fluxserve.catalog.sizes import ASPECT_RATIOS, MEGAPIXELS, image_size
from fluxserve.predictors import loading
from fluxserve.predictors.base import PredictContext, summarize
from fluxserve.predictors.go_fast.options import FastOptions
from fluxserve.predictors.go_fast.path import FastPath

logger = logging.getLogger(__name__)

#: cog-flux offloads models to the CPU on GPUs with less memory than this.
OFFLOAD_BELOW_BYTES = 48 * 1024**3


def pick_seed(seed: int | None) -> int:
    """cog-flux's bf16 rule (also Kontext's): None and 0 mean random, and random seeds have 16 bits."""
    if not seed:
        return int.from_bytes(os.urandom(2), "big")
    return seed


def cpu_generator(seed: int) -> Any:
    """A seeded CPU ``torch.Generator``: the noise, and so the image, is the same for a seed on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)


class DiffusersFluxPredictor:
    """The setup and per-prediction chores shared by the FLUX predictors; subclasses add ``predict``.

    ``weights`` is a Hugging Face repo id or a local diffusers checkout. ``device`` defaults to ``cuda`` when
    available, else ``cpu``; CUDA runs in bfloat16 (offloading models to the CPU below 48 GiB of GPU memory, as
    cog-flux does), the CPU in float32. ``fast`` says how go_fast is built (the registry passes
    :meth:`FastOptions.from_settings`; default :class:`FastOptions` ``()``).
    """

    #: Shown in logs and in the weights help, e.g. "FLUX.1-dev" (the name of its diffusers checkout).
    label: ClassVar[str] = "FLUX.1"
    #: Which :data:`~fluxserve.predictors.go_fast.options.DEFAULT_STEPS` entry go_fast uses.
    fast_family: ClassVar[str] = "schnell"
    #: The diffusers pipeline class the weights load as (imported only when loading).
    pipeline_class: ClassVar[str] = "FluxPipeline"
    #: The model's ``owner/name``, as ``fluxserve pull`` takes it.
    model_ref: ClassVar[str] = ""
    #: The Hugging Face repo of the real weights (gated: needs an accepted license and a token).
    hub_repo: ClassVar[str] = ""
    #: The :class:`~fluxserve.config.Settings` field naming the weights (read from ``FLUXSERVE_<FIELD>``).
    weights_setting: ClassVar[str] = ""
    #: The license to accept on the Hub, as the weights help names it.
    license_name: ClassVar[str] = ""
    #: The first way to get the weights in the weights help, up to "set <weights env> ..."; ``{model}``,
    #: ``{repo}`` and ``{license}`` are filled in from the attributes above.
    download_help: ClassVar[str] = (
        "download them with `fluxserve pull {model}` (or `huggingface-cli download {repo}`). The repo is gated: "
        "accept the {license} license at https://huggingface.co/{repo} and log in with `huggingface-cli login` or "
        "set HF_TOKEN first. Or"
    )

    def __init__(self, weights: str, device: str | None = None, fast: FastOptions | None = None) -> None:
        self.weights = weights
        self.requested_device = device
        self.device: str = device or "cpu"
        self.dtype_name: str = "float32"
        self.offloaded = False
        #: How go_fast is built at setup.
        self.fast_options: FastOptions = fast if fast is not None else FastOptions()
        self._pipe: Any = None
        self._fast: FastPath | None = None

    @property
    def weights_env(self) -> str:
        """The environment variable an operator sets to this model's weights."""
        return f"FLUXSERVE_{self.weights_setting.upper()}"

    def how_to_provide(self, weights: str) -> str:
        """What to do when ``weights`` cannot be loaded (the end of every :class:`WeightsUnavailable` message)."""
        download = self.download_help.format(model=self.model_ref, repo=self.hub_repo, license=self.license_name)
        return loading.how_to_provide(weights, download=download, weights_env=self.weights_env, checkout=self.label)

    def setup(self) -> None:
        """Load the pipeline; raise :class:`WeightsUnavailable` (fast, without a network) if we cannot."""
        import torch

        if self.requested_device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        on_cuda = self.on_cuda
        dtype = torch.bfloat16 if on_cuda else torch.float32
        self.dtype_name = str(dtype).removeprefix("torch.")

        start = time.perf_counter()
        pipe = self._load(dtype)
        if on_cuda:
            self._place_on_cuda(pipe)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._after_load(pipe)
        logger.info(
            "Loaded %s from %s on %s (%s) in %.2f s",
            self.label,
            self.weights,
            self.device,
            self.dtype_name,
            time.perf_counter() - start,
        )
        self._setup_fast(pipe)

    def _load(self, dtype: Any) -> Any:
        """Return the loaded (not yet placed) :attr:`pipeline_class` pipeline in ``dtype``."""
        return loading.load_pipeline(
            self.weights, pipeline_class=self.pipeline_class, dtype=dtype, help_text=self.how_to_provide(self.weights)
        )

    def _place_on_cuda(self, pipe: Any) -> None:
        """Put the loaded pipeline on :attr:`device`: whole, or with model CPU offload (setting :attr:`offloaded`)
        on a GPU under 48 GiB, as cog-flux does. A model whose parts need another rule overrides this."""
        import torch

        total = torch.cuda.get_device_properties(torch.device(self.device)).total_memory
        if total < OFFLOAD_BELOW_BYTES:
            logger.info("GPU has %.1f GiB (< 48 GiB): enabling model CPU offload", total / 1024**3)
            pipe.enable_model_cpu_offload(device=self.device)
            self.offloaded = True
        else:
            pipe.to(self.device)

    def _after_load(self, pipe: Any) -> None:
        """Hook for pipelines built from the loaded one (they share its modules, so placement carries over)."""

    # --- residency (see fluxserve.worker.models) ---------------------------------------------------

    def _pipes(self) -> list[Any]:
        fast = self._fast.pipe if self._fast is not None else None
        return [self._pipe, fast, *self._extra_pipes()]

    def _extra_pipes(self) -> list[Any]:
        """Pipelines built from the loaded one that hold modules of their own (none by default)."""
        return []

    def memory_bytes(self) -> int:
        """Bytes of weights this predictor holds (parameters and buffers; shared modules counted once)."""
        from fluxserve.predictors.residency import footprint_bytes

        return footprint_bytes(self._pipes()) if self._pipe is not None else 0

    def offload(self) -> bool:
        """Move the weights to pinned CPU RAM to make room on the GPU; False where that frees nothing
        (on the CPU, or with model CPU offload, which keeps them there already)."""
        if self._pipe is None or not self.on_cuda or self.offloaded:
            return False
        from fluxserve.predictors.residency import to_pinned_cpu

        to_pinned_cpu(self._pipes())
        return True

    def onload(self) -> None:
        """Bring the weights back to the GPU after :meth:`offload`."""
        from fluxserve.predictors.residency import to_device

        to_device(self._pipes(), self.device)

    # --- go_fast -----------------------------------------------------------------------------------

    def _setup_fast(self, pipe: Any) -> None:
        """Build the go_fast pipeline (see :mod:`fluxserve.predictors.go_fast`) and, on a GPU, warm up its shapes."""
        from fluxserve.predictors.go_fast.steps import prepare

        options = self.fast_options
        try:
            self._fast = prepare(
                pipe, family=self.fast_family, on_cuda=self.on_cuda, offloaded=self.offloaded, options=options
            )
        except Exception as exc:
            # go_fast is an optional speed-up: whatever breaks while building it, the bf16 path must still serve.
            logger.warning("%s: building go_fast failed", self.label, exc_info=True)
            self._fast = FastPath(reason=f"building it failed: {summarize(exc)}")
        if not self._fast.available:
            if self.on_cuda:
                logger.info("%s: go_fast is not available: %s", self.label, self._fast.reason)
            return
        if self.on_cuda and options.warmup != "none":
            self._fast.warm_up(self._warmup_calls(options.warmup))
        if self._fast.available:
            cache = {None: "", True: ", compile cache hit", False: ", compile cache miss"}[self._fast.compile_cache_hit]
            logger.info(
                "%s: %s; built in %.1f s%s%s",
                self.label,
                self._fast.describe(),
                self._fast.setup_seconds,
                f", {self._fast.warmup_summary}" if self._fast.warmup_summary else "",
                cache,
            )

    def _warmup_calls(self, scope: str) -> list[tuple[int, dict[str, Any]]]:
        """``(steps, pipeline kwargs)`` that run every shape this model serves (``scope`` ``one``: 1:1 only)."""
        return []

    def _pipeline_for(self, go_fast: bool, steps: int) -> tuple[Any, contextlib.AbstractContextManager[None]]:
        """The pipeline to run a request on, and the context to run it in: go_fast's when asked and built."""
        pipe = self._require_setup()
        if go_fast and self._fast is not None and self._fast.available:
            return self._fast.pipe, self._fast.call(steps)
        return pipe, contextlib.nullcontext()

    # --- per prediction ----------------------------------------------------------------------------

    @property
    def on_cuda(self) -> bool:
        """Whether the predictor runs on a CUDA device."""
        import torch

        return torch.device(self.device).type == "cuda"

    def _require_setup(self) -> Any:
        if self._pipe is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before predict()")
        return self._pipe

    def _log_preamble(self, inputs: dict[str, Any], ctx: PredictContext, *, bf16_only: str | None = None) -> int:
        """Log the seed and what go_fast and the safety checker do; return the seed to use.

        ``bf16_only`` is cog-flux's message for a request go_fast cannot serve on a GPU (img2img).
        """
        seed = pick_seed(inputs.get("seed"))
        ctx.log(f"Using seed: {seed}")
        if inputs.get("go_fast"):
            fast = self._fast
            if bf16_only and (self.on_cuda or (fast is not None and fast.available)):
                ctx.log(bf16_only)
            elif fast is not None and fast.available:
                ctx.log(fast.describe(inputs.get("num_inference_steps")))
            elif not self.on_cuda:
                ctx.log(f"go_fast has no effect on CPU; running in {self.dtype_name}")
            else:
                reason = fast.reason if fast is not None else "the predictor is not set up"
                ctx.log(f"go_fast is not available ({reason}); running in {self.dtype_name}")
        if not inputs.get("disable_safety_checker"):
            ctx.log("No safety checker is configured; images are not filtered.")
        return seed


def step_callback(ctx: PredictContext, default_total: int) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A diffusers ``callback_on_step_end`` that reports each finished step to ``ctx`` (and so notices cancel).

    The total is the pipeline's own step count when it knows it (img2img runs fewer steps than asked).
    """

    def on_step_end(pipe: Any, step_index: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        total = getattr(pipe, "num_timesteps", None) or default_total
        ctx.progress(step_index + 1, int(total))  # raises PredictionCanceled on cancel
        return kwargs

    return on_step_end


def flux_warmup_calls(scope: str, *, guidance: float, max_sequence_length: int) -> list[tuple[int, dict[str, Any]]]:
    """go_fast warm-up for a text-to-image FLUX model: every served size (11 aspect ratios at 1 and 0.25 MP, 1:1
    at 1 MP first so that an automatic-dynamic compile keeps its static graph for the most common size), then
    a 2-image batch (dynamo compiles batch 1 and batch > 1 apart). ``scope`` ``one``: 1:1 at 1 MP only."""
    sizes = [image_size("1:1", "1")]
    if scope == "all":
        sizes += [image_size(r, mp) for mp in MEGAPIXELS for r in ASPECT_RATIOS if image_size(r, mp) != sizes[0]]
    calls = [(2, _warmup_kwargs(w, h, 1, guidance, max_sequence_length)) for w, h in sizes]
    calls.append((2, _warmup_kwargs(*sizes[0], 2, guidance, max_sequence_length)))
    return calls


def _warmup_kwargs(width: int, height: int, batch: int, guidance: float, max_sequence_length: int) -> dict[str, Any]:
    return {
        "prompt": "warm-up",
        "width": width,
        "height": height,
        "guidance_scale": guidance,
        "num_images_per_prompt": batch,
        "generator": cpu_generator(0),
        "max_sequence_length": max_sequence_length,
        "output_type": "pil",
    }
