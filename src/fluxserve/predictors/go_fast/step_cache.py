"""TaylorSeer-style step caching for the FLUX transformer: compute some denoising steps in full, forecast the rest.

Replicate's Kontext go_fast ("go really fast" in replicate/cog-flux-kontext) runs the first 3 and the last 3 steps
in full and, in between, one step in three; a skipped step's transformer output is a Taylor expansion (in the step
index) of the outputs of the last full steps. For 28 steps that is 13 full steps. :class:`StepCache` does the same
at the level of the transformer's output (the velocity the scheduler consumes), as cog-flux-kontext does and as
diffusers' TaylorSeer "lite" mode does:

* it wraps the transformer's ``forward`` once, and is a pass-through unless a call is inside :meth:`StepCache.run`,
  so a bf16 pipeline that shares the module is never affected;
* it decides by step index only, never by looking at a tensor, so it adds no host-device synchronisation;
* it sits *outside* the transformer blocks, so it works with regional ``torch.compile`` of the blocks (a cache
  whose hooks live inside the blocks, such as diffusers' First Block Cache, forces graph breaks there).

This module imports torch; import it from inside functions only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

#: Below this many steps every step is computed: a 4-step schnell run has nothing to spare.
MIN_CACHED_STEPS = 10
#: Full steps at the start and at the end ("where the model makes the biggest changes").
EDGE_STEPS = 3
#: In between, one step in this many is computed in full.
INTERVAL = 3


def compute_schedule(steps: int) -> tuple[bool, ...]:
    """Which of ``steps`` denoising steps run the transformer in full (True) and which are forecast (False).

    cog-flux-kontext's "go really fast" map: the first and last :data:`EDGE_STEPS` in full, and in between the
    steps with ``i % 3 == 1``; with fewer than :data:`MIN_CACHED_STEPS` steps, all of them. 28 steps → 13 full.
    """
    if steps < MIN_CACHED_STEPS:
        return (True,) * steps
    return tuple(i < EDGE_STEPS or i >= steps - EDGE_STEPS or i % INTERVAL == 1 for i in range(steps))


class StepCache:
    """Forecasts the outputs of a transformer on the steps :func:`compute_schedule` skips (see the module doc).

    ``order`` is the highest Taylor term (1: linear extrapolation from the last two full steps). Factors are kept in
    float32, a few MiB at 1024² (the output is ``(batch, tokens, 64)``).
    """

    def __init__(self, transformer: Any, order: int = 1) -> None:
        if order < 0:
            raise ValueError("order must be >= 0")
        self.order = order
        self._transformer = transformer
        self._own_forward: Any = transformer.__dict__.get("forward")
        self._forward: Callable[..., Any] = transformer.forward
        # An instance attribute shadows the class's forward: nn.Module.__call__ looks ``forward`` up on the
        # instance, so the blocks (and their compiled code) are untouched.
        transformer.forward = self._call
        self._schedule: tuple[bool, ...] | None = None
        self._step = 0
        self._last_full: int | None = None
        self._factors: list[torch.Tensor] = []
        self._dtype: torch.dtype = torch.float32
        #: Steps computed in full / forecast during the current (or last) :meth:`run`.
        self.computed = 0
        self.forecast = 0

    @contextlib.contextmanager
    def run(self, steps: int) -> Iterator[tuple[bool, ...]]:
        """Cache the transformer calls of one pipeline run of ``steps`` steps; yields the schedule.

        State is reset on entry and on exit, so a run that raised (a cancel) leaves nothing behind.
        """
        schedule = compute_schedule(steps)
        self._reset()
        self._schedule = schedule
        try:
            yield schedule
        finally:
            self._schedule = None
            self._factors = []
            self._last_full = None

    def remove(self) -> None:
        """Give the transformer back the ``forward`` it had (its class's, or an earlier wrapper's)."""
        if self._transformer.__dict__.get("forward") != self._call:
            return  # someone wrapped it after us; leave their wrapper (we stay a pass-through)
        if self._own_forward is None:
            del self._transformer.forward
        else:
            self._transformer.forward = self._own_forward

    def _reset(self) -> None:
        self._step = 0
        self._last_full = None
        self._factors = []
        self.computed = 0
        self.forecast = 0

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        schedule = self._schedule
        if schedule is None:
            return self._forward(*args, **kwargs)
        step = self._step
        self._step += 1
        if step >= len(schedule) or schedule[step] or not self._factors:
            out = self._forward(*args, **kwargs)
            self._update(step, out[0] if isinstance(out, tuple) else out.sample)
            self.computed += 1
            return out
        self.forecast += 1
        sample = self._predict(step)
        if kwargs.get("return_dict", True):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=sample)
        return (sample,)

    def _update(self, step: int, output: torch.Tensor) -> None:
        """New Taylor factors from a full step: the value, then divided differences against the previous factors."""
        value = output.detach().float()
        factors = [value]
        if self._last_full is not None:
            delta = step - self._last_full
            for previous in self._factors[: self.order]:
                factors.append((factors[-1] - previous) / delta)
        self._factors = factors
        self._last_full = step
        self._dtype = output.dtype

    def _predict(self, step: int) -> torch.Tensor:
        assert self._last_full is not None
        offset = step - self._last_full
        forecast = self._factors[0].clone()
        for order, factor in enumerate(self._factors[1:], start=1):
            forecast.add_(factor, alpha=offset**order / math.factorial(order))
        return forecast.to(self._dtype)
