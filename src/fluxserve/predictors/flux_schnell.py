"""black-forest-labs/flux-schnell on diffusers' ``FluxPipeline``.

Behaviour follows Replicate's cog-flux ``SchnellPredictor`` bf16 path where it is visible to users
(seed rule and ``Using seed:`` line, T5 at 256 tokens, ``out-{i}.{fmt}`` files); see
``reference/flux-models.md`` §1.1 and §2. torch and diffusers are imported in :meth:`setup` only, so
this module can be imported by processes that must never import torch.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fluxserve.predictors.base import PredictContext, WeightsUnavailable
from fluxserve.predictors.inputs import image_size

logger = logging.getLogger(__name__)

#: The Hugging Face repo of the real weights (gated: needs an accepted license and a token).
DEFAULT_WEIGHTS = "black-forest-labs/FLUX.1-schnell"
#: Environment variable the operator sets to a local diffusers FLUX.1-schnell checkout.
WEIGHTS_ENV = "FLUXSERVE_FLUX_SCHNELL_WEIGHTS"

#: Replicate's schnell encodes prompts with T5 at 256 tokens (dev and kontext use 512).
T5_MAX_SEQUENCE_LENGTH = 256
#: cog-flux offloads models to the CPU on GPUs with less memory than this.
OFFLOAD_BELOW_BYTES = 48 * 1024**3
#: libwebp effort 0-6 (Pillow's default is 4). Measured at q80 on 1024² images, 2 CPU cores:
#: photos 24/36/80 ms and 163/134/128 KiB for methods 0/2/4; noise 41/60/112 ms. Method 2 halves the
#: encode time of the default for ~5% more bytes; method 0 saves another ~12 ms but adds ~25% bytes.
WEBP_METHOD = 2
#: Seconds to wait for a TCP connection to the Hub before deciding there is no network.
HUB_PROBE_TIMEOUT_S = 3.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


def _how_to_provide(weights: str) -> str:
    return (
        "To provide weights, do one of: download them with "
        f"`huggingface-cli download {DEFAULT_WEIGHTS}` (the repo is gated: accept its license on "
        "huggingface.co and log in with `huggingface-cli login` or set HF_TOKEN); or set "
        f"{WEIGHTS_ENV} to a local directory holding a diffusers FLUX.1-schnell checkout "
        "(the folder with model_index.json); or start with --demo to use tiny random weights "
        f"(noise images, for trying the API). Tried: {weights!r}."
    )


def _summarize(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _from_pretrained(source: str, dtype: Any, *, local_files_only: bool) -> Any:
    import diffusers
    from diffusers import FluxPipeline

    # diffusers 0.42 renamed torch_dtype to dtype (the old name warns); older releases know only torch_dtype.
    major, minor = (int(p) for p in re.findall(r"\d+", diffusers.__version__)[:2])
    dtype_kw = "dtype" if (major, minor) >= (0, 42) else "torch_dtype"
    return FluxPipeline.from_pretrained(source, local_files_only=local_files_only, **{dtype_kw: dtype})


class FluxSchnellPredictor:
    """FLUX.1 [schnell] text-to-image through ``diffusers.FluxPipeline``.

    ``weights`` is a Hugging Face repo id (``black-forest-labs/FLUX.1-schnell``) or a local diffusers
    checkout (such as one made by :func:`fluxserve.predictors.tiny.build_tiny_pipeline`). ``device``
    defaults to ``cuda`` when available, else ``cpu``; CUDA runs in bfloat16, the CPU in float32.
    """

    def __init__(self, weights: str, device: str | None = None) -> None:
        self.weights = weights
        self.requested_device = device
        self.device: str = device or "cpu"
        self.dtype_name: str = "float32"
        self.offloaded = False
        self._pipe: Any = None

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the pipeline; raise :class:`WeightsUnavailable` (fast, without a network) if we cannot."""
        import torch

        if self.requested_device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        on_cuda = torch.device(self.device).type == "cuda"
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
        logger.info(
            "Loaded FLUX.1-schnell from %s on %s (%s) in %.2f s",
            self.weights,
            self.device,
            self.dtype_name,
            time.perf_counter() - start,
        )

    def _load(self, dtype: Any) -> Any:
        weights = self.weights
        local = Path(weights).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").is_file():
                raise WeightsUnavailable(
                    f"{local} is not a diffusers pipeline checkout (it has no model_index.json). "
                    + _how_to_provide(weights)
                )
            try:
                return _from_pretrained(str(local), dtype, local_files_only=True)
            except Exception as exc:
                raise WeightsUnavailable(
                    f"Could not load a FLUX pipeline from {local} ({_summarize(exc)}). " + _how_to_provide(weights)
                ) from exc
        if local.exists() or not _HUB_ID.match(weights) or weights.startswith((".", "~")):
            raise WeightsUnavailable(f"Weights directory {weights!r} does not exist. " + _how_to_provide(weights))

        # A hub id: first the local Hugging Face cache only (no network, fails in milliseconds).
        try:
            return _from_pretrained(weights, dtype, local_files_only=True)
        except Exception as cached_exc:
            cache_error = _summarize(cached_exc)
        no_dir = f" There is no local directory {weights!r} either." if "/" in weights else ""
        if _offline():
            raise WeightsUnavailable(
                f"{weights} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({cache_error})."
                + no_dir
                + " "
                + _how_to_provide(weights)
            )
        if not _hub_reachable():
            raise WeightsUnavailable(
                f"{weights} is not in the Hugging Face cache and the Hub cannot be reached (no network?)."
                + no_dir
                + " "
                + _how_to_provide(weights)
            )
        logger.info("%s is not cached; downloading it from the Hugging Face Hub", weights)
        try:
            return _from_pretrained(weights, dtype, local_files_only=False)
        except Exception as exc:
            raise WeightsUnavailable(
                f"Could not load {weights} from the Hugging Face Hub ({_summarize(exc)}). " + _how_to_provide(weights)
            ) from exc

    # --- predict -------------------------------------------------------------------------------

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """Generate ``num_outputs`` images and write them to ``ctx.output_dir/out-{i}.{fmt}``."""
        import torch

        if self._pipe is None:
            raise RuntimeError("FluxSchnellPredictor.setup() must run before predict()")
        ctx.check_canceled()

        seed: int | None = inputs.get("seed")
        if not seed:  # cog-flux bf16 path: None and 0 mean random, 16 bits
            seed = int.from_bytes(os.urandom(2), "big")
        ctx.log(f"Using seed: {seed}")
        if inputs.get("go_fast"):
            if torch.device(self.device).type == "cpu":
                ctx.log(f"go_fast has no effect on CPU; running in {self.dtype_name}")
            else:
                ctx.log(f"go_fast is not available yet; running in {self.dtype_name}")
        if not inputs.get("disable_safety_checker"):
            ctx.log("No safety checker is configured; images are not filtered.")

        width, height = image_size(inputs["aspect_ratio"], inputs["megapixels"])
        steps = int(inputs["num_inference_steps"])
        num_outputs = int(inputs["num_outputs"])

        def on_step_end(_pipe: Any, step_index: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            ctx.progress(step_index + 1, steps)  # raises PredictionCanceled on cancel
            return kwargs

        # A CPU generator makes a seed give the same image on every device.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            result = self._pipe(
                prompt=inputs["prompt"],
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=0.0,
                num_images_per_prompt=num_outputs,
                generator=generator,
                max_sequence_length=T5_MAX_SEQUENCE_LENGTH,
                output_type="pil",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents"],
            )
        images: list[Any] = list(result.images)

        fmt = str(inputs["output_format"])
        quality = int(inputs["output_quality"])
        paths = [ctx.output_dir / f"out-{i}.{fmt}" for i in range(len(images))]
        save = _saver(fmt, quality)
        if len(images) == 1:
            save(images[0], paths[0])
        else:  # Pillow releases the GIL while encoding
            with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
                list(pool.map(save, images, paths))
        return paths


def _saver(fmt: str, quality: int) -> Callable[[Any, Path], None]:
    """Return ``save(image, path)`` for ``fmt`` ("webp", "jpg" or "png") at ``quality``."""
    pil_format = _PIL_FORMATS[fmt]
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
