"""What the diffusers FLUX predictors share: loading weights, device placement, seeds, progress and encoding.

Behaviour follows Replicate's cog-flux where users can see it (``reference/flux-models.md`` §2): the seed rule
and its ``Using seed:`` line, CUDA in bfloat16 with model offload below 48 GiB, ``out-{i}.{fmt}`` files. torch
and diffusers are imported inside functions only, so importing this module never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from fluxserve.catalog.sizes import ASPECT_RATIOS, MEGAPIXELS, image_size
from fluxserve.formats import IMAGE_FORMATS
from fluxserve.predictors.base import PredictContext, WeightsUnavailable, summarize
from fluxserve.predictors.fast import FastOptions, FastPath

logger = logging.getLogger(__name__)

#: cog-flux offloads models to the CPU on GPUs with less memory than this.
OFFLOAD_BELOW_BYTES = 48 * 1024**3
#: libwebp effort 0-6 (Pillow's default is 4). Measured at q80 on 1024² images, 2 CPU cores:
#: photos 24/36/80 ms and 163/134/128 KiB for methods 0/2/4; noise 41/60/112 ms. Method 2 halves the
#: encode time of the default for ~5% more bytes; method 0 saves another ~12 ms but adds ~25% bytes.
WEBP_METHOD = 2
#: Seconds to wait for a TCP connection to the Hub before deciding there is no network.
HUB_PROBE_TIMEOUT_S = 3.0

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

#: ``from_pretrained(source, local_files_only)``: loads a pipeline from a directory or a hub id.
PipelineLoader = Callable[[str, bool], Any]


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds.

    Behind a proxy we cannot tell, so we assume yes and let huggingface_hub's own timeouts apply.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks huggingface_hub never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``{"dtype": dtype}`` for diffusers ≥ 0.42 (which renamed it; the old name warns), else ``torch_dtype``."""
    import diffusers

    major, minor = (int(p) for p in re.findall(r"\d+", diffusers.__version__)[:2])
    return {"dtype" if (major, minor) >= (0, 42) else "torch_dtype": dtype}


def load_pipeline(
    weights: str,
    *,
    from_pretrained: PipelineLoader,
    how_to_provide: Callable[[str], str],
    hub_reachable: Callable[[], bool],
) -> Any:
    """Load a pipeline from a local diffusers directory or a hub id, failing fast with an actionable message.

    A hub id is tried in the local Hugging Face cache first (no network, milliseconds); it is downloaded only
    when ``HF_HUB_OFFLINE`` is unset and the Hub answers. Every failure raises :class:`WeightsUnavailable` whose
    message ends with ``how_to_provide(weights)``.
    """
    local = Path(weights).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise WeightsUnavailable(
                f"{local} is not a diffusers pipeline checkout (it has no model_index.json). " + how_to_provide(weights)
            )
        try:
            return from_pretrained(str(local), True)
        except Exception as exc:
            raise WeightsUnavailable(
                f"Could not load a FLUX pipeline from {local} ({summarize(exc)}). " + how_to_provide(weights)
            ) from exc
    if local.exists() or not HUB_ID.match(weights) or weights.startswith((".", "~")):
        raise WeightsUnavailable(f"Weights directory {weights!r} does not exist. " + how_to_provide(weights))

    try:
        return from_pretrained(weights, True)
    except Exception as cached_exc:
        cache_error = summarize(cached_exc)
    no_dir = f" There is no local directory {weights!r} either." if "/" in weights else ""
    if hf_offline():
        raise WeightsUnavailable(
            f"{weights} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({cache_error})."
            + no_dir
            + " "
            + how_to_provide(weights)
        )
    if not hub_reachable():
        raise WeightsUnavailable(
            f"{weights} is not in the Hugging Face cache and the Hub cannot be reached (no network?)."
            + no_dir
            + " "
            + how_to_provide(weights)
        )
    logger.info("%s is not cached; downloading it from the Hugging Face Hub", weights)
    try:
        return from_pretrained(weights, False)
    except Exception as exc:
        raise WeightsUnavailable(
            f"Could not load {weights} from the Hugging Face Hub ({summarize(exc)}). " + how_to_provide(weights)
        ) from exc


def pick_seed(seed: int | None) -> int:
    """cog-flux's bf16 rule (also Kontext's): None and 0 mean random, and random seeds have 16 bits."""
    if not seed:
        return int.from_bytes(os.urandom(2), "big")
    return seed


def save_images(images: Sequence[Any], paths: Sequence[Path], fmt: str, quality: int) -> None:
    """Encode PIL ``images`` to ``paths`` as ``fmt`` ("webp", "jpg" or "png") at ``quality``, in parallel."""
    save = _saver(fmt, quality)
    if len(images) == 1:
        save(images[0], paths[0])
        return
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:  # Pillow drops the GIL
        list(pool.map(save, images, paths))


def _saver(fmt: str, quality: int) -> Callable[[Any, Path], None]:
    pil_format = IMAGE_FORMATS[fmt].pil
    options: dict[str, Any]
    if pil_format == "WEBP":
        options = {"quality": quality, "method": WEBP_METHOD}
    elif pil_format == "JPEG":
        options = {"quality": quality, "optimize": True}
    else:
        options = {}

    def save(image: Any, path: Path) -> None:
        image.save(path, format=pil_format, **options)

    return save


class DiffusersFluxPredictor:
    """The setup and per-prediction chores shared by the FLUX predictors; subclasses add ``_load`` and ``predict``.

    ``weights`` is a Hugging Face repo id or a local diffusers checkout. ``device`` defaults to ``cuda`` when
    available, else ``cpu``; CUDA runs in bfloat16 (offloading models to the CPU below 48 GiB of GPU memory, as
    cog-flux does), the CPU in float32.
    """

    #: Shown in logs, e.g. "FLUX.1-dev".
    label: ClassVar[str] = "FLUX.1"
    #: Which :data:`~fluxserve.predictors.fast.DEFAULT_STEPS` entry go_fast uses.
    fast_family: ClassVar[str] = "schnell"

    def __init__(self, weights: str, device: str | None = None) -> None:
        self.weights = weights
        self.requested_device = device
        self.device: str = device or "cpu"
        self.dtype_name: str = "float32"
        self.offloaded = False
        #: How go_fast is built; None: :meth:`FastOptions.from_env` at setup.
        self.fast_options: FastOptions | None = None
        self._pipe: Any = None
        self._fast: FastPath | None = None

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
            total = torch.cuda.get_device_properties(torch.device(self.device)).total_memory
            if total < OFFLOAD_BELOW_BYTES:
                logger.info("GPU has %.1f GiB (< 48 GiB): enabling model CPU offload", total / 1024**3)
                pipe.enable_model_cpu_offload(device=self.device)
                self.offloaded = True
            else:
                pipe.to(self.device)
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

    def _setup_fast(self, pipe: Any) -> None:
        """Build the go_fast pipeline (see :mod:`fluxserve.predictors.fast`) and, on a GPU, warm up its shapes."""
        from fluxserve.predictors import fast

        options = self.fast_options or FastOptions.from_env()  # a bad setting fails setup, with its name
        try:
            self._fast = fast.prepare(
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

    @property
    def on_cuda(self) -> bool:
        """Whether the predictor runs on a CUDA device."""
        import torch

        return torch.device(self.device).type == "cuda"

    def _load(self, dtype: Any) -> Any:
        """Return the loaded (not yet placed) pipeline in ``dtype``."""
        raise NotImplementedError

    def _after_load(self, pipe: Any) -> None:
        """Hook for pipelines built from the loaded one (they share its modules, so placement carries over)."""

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


def cpu_generator(seed: int) -> Any:
    """A seeded CPU ``torch.Generator``: the noise, and so the image, is the same for a seed on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)
