"""The :class:`PredictContext` the worker hands a predictor: thread-safe logs, progress and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fluxserve.lifecycle import STOP_LEASE_LOST
from fluxserve.predictors.base import PredictionCanceled


class RunContext:
    """Collects logs from the predictor's thread and carries the cancel flag into it.

    ``on_change`` is called (from the predictor thread) after each new log line; the worker passes
    a function that wakes its event-loop side, which writes logs to the store.
    """

    def __init__(
        self,
        output_dir: Path,
        on_change: Callable[[], None],
        resume_data: dict[str, Any] | None = None,
        earlier_logs: str = "",
    ) -> None:
        self._output_dir = output_dir
        self.output_dir_used = False
        self._on_change = on_change
        # A resumed prediction keeps the logs of its earlier run (the worker rewrites the whole text).
        self._lines: list[str] = earlier_logs.splitlines()
        self._lock = threading.Lock()
        self._bar_started = time.monotonic()
        self._last_step = 0
        self.cancel_event = threading.Event()
        #: Why the worker (not the user) stopped the prediction, if it did.
        self.stop_reason: str | None = None
        #: Metrics the predictor reported (merged into the prediction's metrics when it finishes).
        self.metrics: dict[str, float] = {}
        self._resume_data = resume_data
        self._checkpoint: dict[str, Any] | None = None

    @property
    def output_dir(self) -> Path:
        """Where the predictor writes its files (created on first use: most fixtures never ask)."""
        if not self.output_dir_used:
            self._output_dir.mkdir(parents=True, exist_ok=True)
            self.output_dir_used = True
        return self._output_dir

    def log(self, line: str) -> None:
        """Append a line to the logs."""
        with self._lock:
            self._lines.append(line.rstrip("\n"))
        self._on_change()

    def progress(self, step: int, total: int) -> None:
        """Log a tqdm-format progress line (what replicate clients parse), then check for cancel."""
        now = time.monotonic()
        if step <= self._last_step or step == 1:
            # A new progress bar (e.g. the next image): restart its clock.
            self._bar_started = now
        self._last_step = step
        self.log(tqdm.format_meter(step, total, now - self._bar_started))
        self.check_canceled()

    def check_canceled(self) -> None:
        """Raise :class:`PredictionCanceled` once the user has canceled."""
        if self.cancel_event.is_set():
            raise PredictionCanceled()

    @property
    def lost(self) -> bool:
        """Whether the worker gave this prediction up because its lease passed to another worker."""
        return self.stop_reason == STOP_LEASE_LOST

    @property
    def resume_data(self) -> dict[str, Any] | None:
        """The checkpoint a previous run of this prediction saved, if it is being resumed."""
        return self._resume_data

    def checkpoint(self, data: dict[str, Any]) -> None:
        """Ask the worker to save ``data`` with the prediction (at its next write)."""
        with self._lock:
            self._checkpoint = dict(data)
        self._on_change()

    def take_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint waiting to be written, if any (the worker's side)."""
        with self._lock:
            data, self._checkpoint = self._checkpoint, None
            return data

    def restore_checkpoint(self, data: dict[str, Any]) -> None:
        """Put back a checkpoint whose write failed, unless a newer one arrived meanwhile."""
        with self._lock:
            if self._checkpoint is None:
                self._checkpoint = data

    def set_metric(self, name: str, value: float) -> None:
        """Record a metric reported by the predictor."""
        self.metrics[name] = value

    def text(self) -> str:
        """The logs so far, one line per entry, newline-terminated."""
        with self._lock:
            return "".join(line + "\n" for line in self._lines)
