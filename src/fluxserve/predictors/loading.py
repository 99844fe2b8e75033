"""Loading a diffusers pipeline from a local checkout or the Hugging Face Hub, failing fast with what to do.

A hub id is tried in the local Hugging Face cache first (no network, milliseconds); it is downloaded only when
``HF_HUB_OFFLINE`` is unset and the Hub answers. Every failure is a :class:`WeightsUnavailable` whose message
ends with :func:`how_to_provide`'s help. :func:`from_pretrained` and :func:`hub_reachable` are the seams tests
replace; :func:`load_pipeline` looks both up when it is called. torch and diffusers are imported inside
functions only, so importing this module never imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fluxserve.predictors.base import WeightsUnavailable, summarize

logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to the Hub before deciding there is no network.
HUB_PROBE_TIMEOUT_S = 3.0

#: What a Hugging Face repo id looks like (``owner/name``, or a bare legacy ``name``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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


def from_pretrained(pipeline_class: str, source: str, dtype: Any, *, local_files_only: bool) -> Any:
    """``diffusers.<pipeline_class>.from_pretrained(source)`` in ``dtype``; the one place a pipeline is read."""
    import diffusers

    cls = getattr(diffusers, pipeline_class)
    return cls.from_pretrained(source, local_files_only=local_files_only, **dtype_kwargs(dtype))


def how_to_provide(weights: str, *, download: str, weights_env: str, checkout: str) -> str:
    """The help that ends every :class:`WeightsUnavailable` message: how to get the weights that ``weights``
    failed to name. ``download`` is the model's own first option, worded up to "set <weights_env> ..."."""
    return (
        f"To provide weights, do one of: {download} set {weights_env} to a local directory holding a diffusers "
        f"{checkout} checkout (the folder with model_index.json); or start with --demo to use tiny random weights "
        f"(noise images, for trying the API). Tried: {weights!r}."
    )


def load_pipeline(weights: str, *, pipeline_class: str, dtype: Any, help_text: str) -> Any:
    """Load a ``pipeline_class`` pipeline in ``dtype`` from a local diffusers directory or a hub id.

    Raises :class:`WeightsUnavailable` on any failure, its message ending with ``help_text`` (see the module doc).
    """

    def load(source: str, local_files_only: bool) -> Any:
        # Looked up at call time, so a test's replacement of the module attribute is what runs.
        return from_pretrained(pipeline_class, source, dtype, local_files_only=local_files_only)

    local = Path(weights).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise WeightsUnavailable(
                f"{local} is not a diffusers pipeline checkout (it has no model_index.json). " + help_text
            )
        try:
            return load(str(local), True)
        except Exception as exc:
            raise WeightsUnavailable(
                f"Could not load a FLUX pipeline from {local} ({summarize(exc)}). " + help_text
            ) from exc
    if local.exists() or not HUB_ID.match(weights) or weights.startswith((".", "~")):
        raise WeightsUnavailable(f"Weights directory {weights!r} does not exist. " + help_text)

    try:
        return load(weights, True)
    except Exception as cached_exc:
        cache_error = summarize(cached_exc)
    no_dir = f" There is no local directory {weights!r} either." if "/" in weights else ""
    if hf_offline():
        raise WeightsUnavailable(
            f"{weights} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({cache_error})."
            + no_dir
            + " "
            + help_text
        )
    if not hub_reachable():
        raise WeightsUnavailable(
            f"{weights} is not in the Hugging Face cache and the Hub cannot be reached (no network?)."
            + no_dir
            + " "
            + help_text
        )
    logger.info("%s is not cached; downloading it from the Hugging Face Hub", weights)
    try:
        return load(weights, False)
    except Exception as exc:
        raise WeightsUnavailable(
            f"Could not load {weights} from the Hugging Face Hub ({summarize(exc)}). " + help_text
        ) from exc
