"""Model states: what each worker reports about each model it serves, and the summary the API shows.

A worker loads its models before it claims their predictions (like Cog's ``setup()``), so a model is
``loading`` first, then ``ready`` (in device memory), or ``failed`` with the reason. Under a memory budget
a ready model may be moved to CPU RAM (``offloaded``) or dropped (``unloaded``) to make room for another;
both still take predictions (they are swapped back in first). The API reads these states from the worker
records: ``/ready``, ``GET /v1/models/{owner}/{name}``, the playground and create all use :func:`summarize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fluxserve.schema import utcnow
from fluxserve.store.rows import WorkerRow


class ModelState(StrEnum):
    """The state of one model on one worker."""

    LOADING = "loading"
    READY = "ready"
    OFFLOADED = "offloaded"
    UNLOADED = "unloaded"
    FAILED = "failed"

    @property
    def takes_predictions(self) -> bool:
        """Whether a worker claims predictions of a model in this state (swapping it in first if needed)."""
        return self in (ModelState.READY, ModelState.OFFLOADED, ModelState.UNLOADED)


@dataclass(frozen=True)
class Availability:
    """One model across every live worker: can it take predictions, and if not, why."""

    #: ``ready`` (some worker takes its predictions), ``loading``, ``failed`` or ``no_worker``.
    state: str
    #: Per worker: ``{"worker", "state", "since", "seconds", "load_seconds", "error"}``.
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: The load error when every worker serving it failed to load it.
    error: str | None = None

    @property
    def live_workers(self) -> int:
        """How many live workers serve the model (in any state)."""
        return len(self.workers)

    @property
    def serving(self) -> bool:
        """Whether a live worker takes (or will soon take) its predictions."""
        return self.state in ("ready", "loading")


def _seconds_since(text: Any, now: datetime) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return round(max(0.0, (now - datetime.fromisoformat(text)).total_seconds()), 1)
    except ValueError:
        return None


def summarize(model: str, workers: Iterable[WorkerRow]) -> Availability:
    """How ``model`` stands across ``workers`` (the live ones)."""
    now = utcnow()
    entries: list[dict[str, Any]] = []
    for worker in workers:
        if model not in worker.models:
            continue
        # A worker of an older release reports no states: it loads lazily and takes predictions.
        reported = worker.model_states.get(model) or {"state": ModelState.UNLOADED.value}
        entries.append(
            {
                "worker": worker.id,
                "state": reported.get("state"),
                "since": reported.get("since"),
                "seconds": _seconds_since(reported.get("since"), now),
                "load_seconds": reported.get("load_seconds"),
                "error": reported.get("error"),
            }
        )
    states = {e["state"] for e in entries}
    if not entries:
        return Availability("no_worker")
    if any(ModelState(s).takes_predictions for s in states if s in ModelState._value2member_map_):
        return Availability("ready", entries)
    if ModelState.LOADING.value in states:
        return Availability("loading", entries)
    errors = [e["error"] for e in entries if e["error"]]
    return Availability("failed", entries, errors[0] if errors else "the model failed to load")
