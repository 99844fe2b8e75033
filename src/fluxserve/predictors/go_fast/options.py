"""What go_fast builds: its steps, each model's defaults, and :class:`FastOptions` (from the Settings).

Pure data, no torch: the registry builds :class:`FastOptions` in the worker before a predictor loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluxserve.config import Settings

STEPS: tuple[str, ...] = ("fused_qkv", "fp8", "attention", "compile", "vae", "step_cache", "fbcache")
_CORE = ("fused_qkv", "fp8", "attention", "compile", "vae")
#: What go_fast turns on when ``FLUXSERVE_GO_FAST_STEPS`` is unset. Schnell and FLUX.2 [klein] run 4 steps: no step
#: caching. FLUX.2 [dev] (28 steps) caches steps like FLUX.1 [dev]; its single-stream blocks have their QKV fused
#: already, so ``fused_qkv`` fuses the double-stream ones only.
#: To be confirmed on an H100 with benchmarks/gpu_pipeline.py --ablate (each step must pay for itself).
DEFAULT_STEPS: dict[str, tuple[str, ...]] = {
    "schnell": _CORE,
    "dev": (*_CORE, "step_cache"),
    "kontext": (*_CORE, "step_cache"),
    "flux2-dev": (*_CORE, "step_cache"),
    "flux2-klein": _CORE,
}
#: Families whose distilled models run so few steps that step caching has nothing to skip, and why.
FEW_STEP_FAMILIES: dict[str, str] = {
    "schnell": "schnell runs at most 4 steps",
    "flux2-klein": "klein runs 4 steps",
}
#: Where the compile artifacts go inside the data dir unless ``FLUXSERVE_COMPILE_CACHE_DIR`` says otherwise.
COMPILE_CACHE_DIRNAME = "compile-cache"


@dataclass(frozen=True)
class FastOptions:
    """How go_fast is built. ``steps=None`` means the model's :data:`DEFAULT_STEPS`."""

    steps: tuple[str, ...] | None = None
    #: A diffusers ``AttentionBackendName`` value (``_native_cudnn``, ``_flash_3``, ``native``, ...).
    attention_backend: str = "_native_cudnn"
    #: ``torch.compile`` mode: None (default), ``max-autotune``, ``max-autotune-no-cudagraphs``, ``reduce-overhead``.
    compile_mode: str | None = None
    #: ``torch.compile(dynamic=...)``: None lets dynamo go dynamic on the second shape it sees (the first, 1:1 at
    #: 1 MP, keeps a static graph); True compiles one dynamic graph; False one static graph per shape.
    compile_dynamic: bool | None = None
    #: Taylor order of the step cache (1: linear extrapolation).
    taylor_order: int = 1
    #: First Block Cache threshold (ParaAttention uses 0.08-0.12 for FLUX.1-dev).
    fbcache_threshold: float = 0.08
    #: Shapes run once at setup: ``all`` served shapes, ``one`` (1:1 at 1 MP) or ``none``.
    warmup: str = "all"
    #: Where compile artifacts are kept. :meth:`from_settings` always names one (``<data dir>/compile-cache``
    #: by default); None, in options built by hand, is :func:`~.compile_cache.fallback_cache_dir`.
    cache_dir: Path | None = None
    #: Build go_fast on the CPU too (tests and the CPU benchmark only; in service, go_fast on CPU is a no-op).
    allow_cpu: bool = False

    def steps_for(self, family: str) -> tuple[str, ...]:
        """The steps to try for model ``family`` (a key of :data:`DEFAULT_STEPS`)."""
        return self.steps if self.steps is not None else DEFAULT_STEPS[family]

    @classmethod
    def from_settings(cls, settings: Settings) -> FastOptions:
        """Options from the ``go_fast_*`` and ``compile_cache_dir`` settings (``FLUXSERVE_GO_FAST_*``,
        ``FLUXSERVE_COMPILE_CACHE_DIR``). Settings has checked the values already, all but the step list: a
        step it does not know raises ValueError naming ``FLUXSERVE_GO_FAST_STEPS``."""
        return cls(
            steps=parse_steps(settings.go_fast_steps),
            attention_backend=settings.go_fast_attention,
            compile_mode=settings.go_fast_compile_mode,
            compile_dynamic=settings.go_fast_compile_dynamic,
            taylor_order=settings.go_fast_taylor_order,
            fbcache_threshold=settings.go_fast_fbcache_threshold,
            warmup=settings.go_fast_warmup,
            cache_dir=settings.compile_cache_dir or settings.data_dir / COMPILE_CACHE_DIRNAME,
            allow_cpu=settings.go_fast_on_cpu,
        )


def parse_steps(text: str) -> tuple[str, ...] | None:
    """``default`` → None (the model's defaults), ``none`` → (), else a comma list of names from :data:`STEPS`."""
    text = text.strip().lower()
    if text in ("", "default"):
        return None
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"FLUXSERVE_GO_FAST_STEPS: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    return names
