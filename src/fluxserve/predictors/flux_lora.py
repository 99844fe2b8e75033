"""black-forest-labs/flux-dev-lora and flux-schnell-lora: flux-dev and flux-schnell with LoRAs per prediction.

The worker has already fetched each LoRA input (``lora_weights``, ``extra_lora``) into the LoRA cache and put a
:class:`fluxserve.lora.LoraFile` in its place; these predictors activate them on the pipeline for the one
prediction (:class:`~fluxserve.predictors.lora.LoraAdapters`: loaded adapters stay resident for the next request
that names them, and every adapter is disabled on the way out, so a later prediction without a LoRA gets the
base model's image byte for byte).

go_fast's pipeline (fp8 weights, compiled transformer) carries no adapters: a request with a LoRA runs on the base
pipeline in its own dtype and says so. Replicate multiplies ``lora_scale`` by 1.5 under go_fast because its fp8
weights weaken a LoRA; we run the LoRA on full-precision weights, so the scale applies as given.
torch and diffusers are imported in methods only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxserve.predictors.base import PredictContext
from fluxserve.predictors.flux_dev import FluxDevPredictor
from fluxserve.predictors.flux_schnell import FluxSchnellPredictor
from fluxserve.predictors.go_fast.options import FastOptions
from fluxserve.predictors.lora import DEFAULT_MAX_RESIDENT, FIELDS, SCALE_FIELDS, LoraAdapters, LoraWeights

if TYPE_CHECKING:
    from fluxserve.config import Settings


def requested_loras(inputs: dict[str, Any]) -> tuple[list[tuple[LoraWeights, float]], list[str]]:
    """The request's LoRAs as ``(file, scale)`` and the input field of each, in :data:`FIELDS` order.

    A LoRA input still holding text (not fetched) is a bug in the caller, not bad input: it raises TypeError.
    """
    loras: list[tuple[LoraWeights, float]] = []
    fields: list[str] = []
    for name in FIELDS:
        value = inputs.get(name)
        if value is None:
            continue
        if not hasattr(value, "sha256"):
            raise TypeError(f"{name} must be fetched into a LoRA file before predict(), not {type(value).__name__}")
        scale = inputs.get(SCALE_FIELDS[name])
        loras.append((value, 1.0 if scale is None else float(scale)))
        fields.append(name)
    return loras, fields


class _LoraMixin:
    """Runs the base class's ``predict`` with the request's LoRAs active (see the module docstring)."""

    label: str
    dtype_name: str
    _pipe: Any

    def _init_loras(self) -> None:
        self._adapters = LoraAdapters(max_resident=DEFAULT_MAX_RESIDENT, label=self.label)
        # One prediction at a time holds the adapters: a second one waits instead of mixing LoRAs.
        self._lora_lock = threading.Lock()

    def apply_settings(self, settings: Settings) -> None:
        """Take the operator's LoRA settings (how many adapters stay loaded)."""
        self._adapters.max_resident = max(settings.lora_max_resident, len(FIELDS))

    def _predict_with_loras(self, inputs: dict[str, Any], ctx: PredictContext, base: Any) -> list[Path]:
        loras, fields = requested_loras(inputs)
        if loras and inputs.get("go_fast"):
            ctx.log(f"go_fast is not applied with a LoRA; running in {self.dtype_name} with lora scales as given")
            inputs = {**inputs, "go_fast": False}
        with self._lora_lock, self._adapters.activate(self._require_pipe(), loras, ctx.log, fields=fields):
            result: list[Path] = base(inputs, ctx)
        return result

    def _require_pipe(self) -> Any:
        if self._pipe is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before predict()")
        return self._pipe


class FluxDevLoraPredictor(_LoraMixin, FluxDevPredictor):
    """flux-dev-lora: FLUX.1 [dev] (text to image and img2img) with ``lora_weights`` and ``extra_lora``."""

    def __init__(self, weights: str, device: str | None = None, fast: FastOptions | None = None) -> None:
        super().__init__(weights, device, fast)
        self._init_loras()

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """flux-dev's prediction with the request's LoRAs active on the transformer (shared by img2img)."""
        return self._predict_with_loras(inputs, ctx, super().predict)


class FluxSchnellLoraPredictor(_LoraMixin, FluxSchnellPredictor):
    """flux-schnell-lora: FLUX.1 [schnell] with ``lora_weights``."""

    def __init__(self, weights: str, device: str | None = None, fast: FastOptions | None = None) -> None:
        super().__init__(weights, device, fast)
        self._init_loras()

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> list[Path]:
        """flux-schnell's prediction with the request's LoRA active."""
        return self._predict_with_loras(inputs, ctx, super().predict)
