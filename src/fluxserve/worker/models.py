"""The models a worker holds: loaded before their predictions are claimed, kept within a memory budget.

Like Cog's ``setup()``, a worker loads its models at start (``FLUXSERVE_PRELOAD``) and claims predictions
only of models that can take them. A model that fails to load is ``failed`` with its reason.

Residency: a GPU rarely holds every model at once (flux-dev in bf16 is ~33 GB with its encoders). Models stay
resident while they fit in the budget (``FLUXSERVE_GPU_MEMORY_GB``, default the device's memory; RAM on a CPU
host); to make room, the least recently used one is moved to CPU RAM when its predictor can do that on a GPU
(fast to swap back) or dropped. Swapping a model back in is part of the prediction that needs it, and is logged
on it. One load or swap runs at a time: they compete for the same memory, disk and PCIe bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fluxserve.catalog.registry import ModelSpec
from fluxserve.config import Settings
from fluxserve.modelstate import ModelState
from fluxserve.predictors.base import Predictor, WeightsUnavailable
from fluxserve.schema import utcnow

log = logging.getLogger("fluxserve.worker")

GB = 1024**3
#: Share of the device's memory kept free of weights by default: a 1 MP FLUX step and the VAE decode need
#: several GB of activations beside the weights.
HEADROOM = 0.1
#: A load or swap-in longer than this is logged on the prediction waiting for it.
NOTE_AFTER_SECONDS = 0.5


class ModelLoadFailed(Exception):
    """A prediction's model could not be loaded on this worker (the message is the load error)."""


def error_message(exc: BaseException) -> str:
    """A readable one-line error for a failed prediction."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def build_predictor(spec: ModelSpec, settings: Settings) -> Predictor:
    """Build and set up a predictor (in a thread: this is where torch gets imported and weights load)."""
    predictor = spec.predictor_factory(settings)
    try:
        predictor.setup()
    except WeightsUnavailable:
        raise
    except Exception as exc:
        raise WeightsUnavailable(f"Could not load model {spec.ref}: {error_message(exc)}") from exc
    return predictor


def memory_of(predictor: Predictor | None) -> int:
    """Bytes the predictor holds in device memory, as it reports them (0: unknown or none)."""
    measure = getattr(predictor, "memory_bytes", None)
    if measure is None:
        return 0
    try:
        return int(measure())
    except Exception:
        log.warning("could not measure the memory of %s", type(predictor).__name__, exc_info=True)
        return 0


def device_memory_bytes(device: str | None) -> int:
    """The memory models compete for, less a headroom for activations: the GPU's when a loaded model imported
    torch and ``device`` is (or defaults to) CUDA, else the RAM."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        total = int(torch.cuda.get_device_properties(torch.device(device or "cuda")).total_memory)
    else:
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return int(total * (1 - HEADROOM))


def _release_device_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Slot:
    """One model on this worker."""

    spec: ModelSpec
    state: ModelState = ModelState.UNLOADED
    predictor: Predictor | None = None
    error: str | None = None
    since: str = field(default_factory=lambda: utcnow().isoformat())
    load_seconds: float | None = None
    memory_bytes: int = 0
    last_used: float = 0.0
    in_use: int = 0
    #: Held while this model loads: models that hold no device memory (forwarded ones) load on their own,
    #: not behind a GPU model's minutes-long load.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def set(self, state: ModelState, error: str | None = None) -> None:
        """Move to ``state`` (and remember when)."""
        self.state, self.error, self.since = state, error, utcnow().isoformat()

    def report(self) -> dict[str, Any]:
        """What the worker record says of this model."""
        return {
            "state": self.state.value,
            "since": self.since,
            "load_seconds": self.load_seconds,
            "memory_gb": round(self.memory_bytes / GB, 3) if self.memory_bytes else None,
            "error": self.error,
        }


class ModelManager:
    """Loads, swaps and unloads this worker's models; tells the claim loop which ones take predictions."""

    def __init__(
        self,
        settings: Settings,
        specs: Iterable[ModelSpec],
        *,
        on_change: Callable[[], None] = lambda: None,
        budget_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.slots = {spec.ref: Slot(spec) for spec in specs}
        self.on_change = on_change
        self._budget = budget_bytes
        if budget_bytes is None and settings.gpu_memory_gb is not None:
            self._budget = int(settings.gpu_memory_gb * GB)
        self._lock = asyncio.Lock()
        for ref in self.preload_list():
            self.slots[ref].set(ModelState.LOADING)

    # --- what the claim loop and the heartbeat ask -----------------------------------------------

    def preload_list(self) -> list[str]:
        """The models loaded at start: ``FLUXSERVE_PRELOAD`` (``all``, ``none`` or a comma-separated list)."""
        wanted = self.settings.preload.strip()
        if wanted == "all":
            refs = list(self.slots)
        elif wanted in ("none", ""):
            refs = []
        else:
            refs = [ref for ref in (w.strip() for w in wanted.split(",")) if ref in self.slots]
        # Forwarded models first: they take a moment, and need not wait for the GPU models' loads.
        return sorted(refs, key=lambda ref: not self.slots[ref].spec.max_concurrency)

    @property
    def budget_bytes(self) -> int:
        """The memory budget models are kept within."""
        if self._budget is None:
            return device_memory_bytes(self.settings.device)
        return self._budget

    @budget_bytes.setter
    def budget_bytes(self, value: int) -> None:
        self._budget = value

    def states(self) -> dict[str, dict[str, Any]]:
        """Every model's state, for the worker record."""
        return {ref: slot.report() for ref, slot in self.slots.items()}

    def claimable(self, refs: Iterable[str]) -> list[str]:
        """Those of ``refs`` whose predictions this worker takes now."""
        return [ref for ref in refs if self.slots[ref].state.takes_predictions]

    def resident(self, ref: str) -> bool:
        """Whether ``ref`` runs without a swap-in (ready, or holding no memory worth swapping)."""
        slot = self.slots[ref]
        return slot.state == ModelState.READY or (slot.state == ModelState.UNLOADED and bool(slot.spec.max_concurrency))

    def failed(self) -> dict[str, str]:
        """Models that failed to load, with their errors."""
        return {ref: s.error or "" for ref, s in self.slots.items() if s.state == ModelState.FAILED}

    # --- loading ---------------------------------------------------------------------------------

    async def preload(self) -> None:
        """Load the preload list one model at a time; failures are recorded, not raised."""
        for ref in self.preload_list():
            slot = self.slots[ref]
            try:
                await self._ensure(slot, note=None)
            except ModelLoadFailed:
                continue

    async def acquire(self, spec: ModelSpec, note: Callable[[str], None]) -> Predictor:
        """The ready predictor of ``spec`` for one prediction (loading or swapping it in first, told to
        ``note``); pair with :meth:`release`. Raises :class:`ModelLoadFailed`."""
        slot = self.slots[spec.ref]
        slot.in_use += 1
        try:
            return await self._ensure(slot, note=note)
        except BaseException:
            slot.in_use -= 1
            raise

    def release(self, spec: ModelSpec) -> None:
        """The prediction that acquired ``spec`` is done with it."""
        slot = self.slots[spec.ref]
        slot.in_use -= 1
        slot.last_used = time.monotonic()

    async def _ensure(self, slot: Slot, note: Callable[[str], None] | None) -> Predictor:
        if slot.state == ModelState.READY and slot.predictor is not None:
            slot.last_used = time.monotonic()
            return slot.predictor
        # Shielded: a prediction that stops waiting (canceled, lease lost) must not abort a load others need.
        return await asyncio.shield(self._load(slot, note))

    async def _load(self, slot: Slot, note: Callable[[str], None] | None) -> Predictor:
        ref = slot.spec.ref
        async with slot.lock if slot.spec.max_concurrency else self._lock:
            if slot.state == ModelState.READY and slot.predictor is not None:
                return slot.predictor
            if slot.state == ModelState.FAILED and note is not None:
                raise ModelLoadFailed(slot.error)
            swap_in = slot.state == ModelState.OFFLOADED and slot.predictor is not None
            how = "swap-in from CPU" if swap_in else ("first use" if note is not None else "preload")
            # Told on the prediction only when it takes a noticeable time (an instant load is not news).
            told: list[bool] = []

            def tell() -> None:
                assert note is not None
                told.append(True)
                note(f"Loading {ref} ({how})…")

            if note is not None:
                announce = asyncio.get_running_loop().call_later(NOTE_AFTER_SECONDS, tell)
            log.info("loading %s (%s)", ref, how)
            await self._make_room(slot, slot.memory_bytes)
            slot.set(ModelState.LOADING)
            self.on_change()
            started = time.perf_counter()
            try:
                if swap_in:
                    assert slot.predictor is not None
                    await asyncio.to_thread(slot.predictor.onload)  # type: ignore[attr-defined]
                else:
                    slot.predictor = await asyncio.to_thread(build_predictor, slot.spec, self.settings)
            except Exception as exc:
                if note is not None:
                    announce.cancel()
                slot.predictor = None
                slot.set(ModelState.FAILED, error_message(exc))
                self.on_change()
                log.error("model %s failed to load: %s", ref, slot.error)
                raise ModelLoadFailed(slot.error) from exc
            seconds = round(time.perf_counter() - started, 3)
            slot.load_seconds = seconds
            slot.memory_bytes = memory_of(slot.predictor) or slot.memory_bytes
            slot.last_used = time.monotonic()
            slot.set(ModelState.READY)
            # The first load learns the model's size: now keep the others within the budget.
            await self._make_room(slot, 0)
            self.on_change()
            if note is not None:
                announce.cancel()
                if told:
                    note(f"Loaded {ref} in {seconds:.1f} s")
            log.info(
                "model %s ready in %.1f s (%s)%s",
                ref,
                seconds,
                how,
                f", {slot.memory_bytes / GB:.2f} GB" if slot.memory_bytes else "",
            )
            return slot.predictor

    async def _make_room(self, incoming: Slot, need: int) -> None:
        """Evict least recently used idle models until ``need`` more bytes fit (called under the lock)."""
        budget = self.budget_bytes
        while True:
            resident = [s for s in self.slots.values() if s.state == ModelState.READY and s is not incoming]
            used = sum(s.memory_bytes for s in resident) + (incoming.memory_bytes if need == 0 else need)
            if used <= budget:
                return
            idle = sorted((s for s in resident if s.in_use == 0 and s.memory_bytes), key=lambda s: s.last_used)
            if not idle:
                log.warning(
                    "models need %.2f GB but the budget is %.2f GB and every other model is busy",
                    used / GB,
                    budget / GB,
                )
                return
            await self._evict(idle[0], reason=f"to make room for {incoming.spec.ref}")

    async def _evict(self, slot: Slot, reason: str) -> None:
        ref = slot.spec.ref
        offload = getattr(slot.predictor, "offload", None)
        moved = False
        if offload is not None:
            try:
                moved = bool(await asyncio.to_thread(offload))
            except Exception:
                log.warning("could not move %s to CPU RAM; dropping it", ref, exc_info=True)
        if moved:
            slot.set(ModelState.OFFLOADED)
            log.info("moved %s to CPU RAM %s", ref, reason)
        else:
            slot.predictor = None
            slot.set(ModelState.UNLOADED)
            await asyncio.to_thread(_release_device_memory)
            log.info("unloaded %s %s", ref, reason)
        self.on_change()

    # --- operator requests -----------------------------------------------------------------------

    async def unload(self, ref: str) -> None:
        """Drop ``ref`` from memory (it loads again on its next prediction)."""
        slot = self.slots.get(ref)
        if slot is None:
            return
        async with self._lock:
            if slot.in_use:
                log.warning("not unloading %s: a prediction is using it", ref)
                return
            if slot.predictor is not None or slot.state == ModelState.FAILED:
                slot.predictor = None
                slot.set(ModelState.UNLOADED)
                await asyncio.to_thread(_release_device_memory)
                log.info("unloaded %s (operator request)", ref)
                self.on_change()

    async def load(self, ref: str) -> None:
        """Load ``ref`` now (also retries a model whose load failed)."""
        slot = self.slots.get(ref)
        if slot is None:
            return
        if slot.state == ModelState.FAILED:
            slot.set(ModelState.UNLOADED)
        with contextlib.suppress(ModelLoadFailed):
            await self._ensure(slot, note=None)
