"""The built go_fast pipeline of one predictor (:class:`FastPath`): what it runs with, and running it.

:func:`~.steps.prepare` builds it; the predictors run ``go_fast: true`` requests on :attr:`FastPath.pipe` inside
:meth:`FastPath.call`. torch and diffusers are imported inside methods only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxserve.predictors.base import summarize
from fluxserve.predictors.go_fast.compile_cache import save_megacache

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    """One step's fate: on, with what it does, or off, with why."""

    name: str
    active: bool
    detail: str


@dataclass
class FastPath:
    """The go_fast pipeline of one predictor (or why there is none) and the steps it runs with."""

    pipe: Any = None
    reason: str | None = None
    results: list[StepResult] = field(default_factory=list)
    step_cache: Any = None
    fbcache_threshold: float | None = None
    on_cpu: bool = False
    setup_seconds: float = 0.0
    #: The compile mega-cache file (None: compile is off) and whether it was found and loaded at setup.
    megacache: Path | None = None
    compile_cache_hit: bool | None = None
    warmup_summary: str = ""
    warmup_seconds: float = 0.0

    @property
    def available(self) -> bool:
        """Whether go_fast requests run on :attr:`pipe`."""
        return self.pipe is not None

    @property
    def active(self) -> list[str]:
        """Names of the steps that are on."""
        return [r.name for r in self.results if r.active]

    def skipped(self) -> dict[str, str]:
        """Steps that were asked for but are off, with the reason."""
        return {r.name: r.detail for r in self.results if not r.active}

    def close(self) -> None:
        """Detach from the shared modules (the step cache's forward wrapper) and drop the go_fast pipeline."""
        if self.step_cache is not None:
            self.step_cache.remove()
            self.step_cache = None
        self.pipe = None
        self.reason = "closed"

    def disable(self, reason: str) -> None:
        """Stop serving go_fast (e.g. the warm-up failed); requests then run the bf16 pipeline."""
        self.pipe = None
        self.reason = reason
        logger.warning("go_fast disabled: %s", reason)

    def describe(self, steps: int | None = None) -> str:
        """The prediction log line: what this go_fast request runs with (and what is off, and why)."""
        if not self.available:
            return f"go_fast is not available ({self.reason})"
        parts = []
        for r in self.results:
            if not r.active:
                continue
            if r.name == "step_cache" and steps is not None:
                from fluxserve.predictors.go_fast.step_cache import compute_schedule

                full = sum(compute_schedule(steps))
                parts.append(f"{r.detail}: {full} of {steps} steps computed in full")
            else:
                parts.append(r.detail)
        line = "go_fast: " + ("; ".join(parts) if parts else "no optimisation is on")
        skipped = self.skipped()
        if skipped:
            line += " (off: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
        return line

    @contextlib.contextmanager
    def call(self, steps: int) -> Iterator[None]:
        """Wrap one go_fast pipeline call of ``steps`` denoising steps (switches the per-call caches on and off)."""
        with contextlib.ExitStack() as stack:
            if self.step_cache is not None:
                stack.enter_context(self.step_cache.run(steps))
            if self.fbcache_threshold is not None:
                from diffusers.hooks.first_block_cache import FirstBlockCacheConfig

                transformer = self.pipe.transformer
                transformer.enable_cache(FirstBlockCacheConfig(threshold=self.fbcache_threshold))
                stack.callback(transformer.disable_cache)
            yield

    def warm_up(self, calls: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Run the go_fast pipeline once per ``(steps, kwargs)`` so that compiling and kernel selection happen now,
        not in a user's request; a failure disables go_fast with the reason (the bf16 path still serves)."""
        import torch

        start = time.perf_counter()
        try:
            with torch.inference_mode():
                for steps, kwargs in calls:
                    with self.call(steps):
                        self.pipe(num_inference_steps=steps, **kwargs)
        except Exception as exc:
            self.disable(f"warm-up failed: {summarize(exc)}")
            return
        self.warmup_seconds = time.perf_counter() - start
        self.warmup_summary = f"warmed {len(calls)} shape(s) in {self.warmup_seconds:.1f} s"
        if self.megacache is not None and not self.compile_cache_hit:
            try:
                if save_megacache(self.megacache):
                    self.warmup_summary += f"; compile cache saved to {self.megacache}"
            except OSError as exc:
                logger.warning("Could not save the compile cache %s: %s", self.megacache, exc)
