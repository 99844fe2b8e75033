"""The contract between the worker and a predictor.

A predictor knows nothing of HTTP or the database. The worker gives it a validated input (defaults
filled in) and a :class:`PredictContext`; it writes files into ``ctx.output_dir`` and returns its
output, where every :class:`pathlib.Path` is replaced by a served URL before the output is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


def summarize(exc: BaseException) -> str:
    """``Type: message`` on one line, at most ~300 characters, for operator-facing errors."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PredictionCanceled(Exception):
    """Raised inside a predictor (by :meth:`PredictContext.check_canceled`) when the user canceled."""


class WeightsUnavailable(Exception):
    """A predictor's weights cannot be loaded; the message tells the operator how to provide them."""


class PredictContext(Protocol):
    """What a running predictor may do besides computing: log, report progress, notice cancel."""

    @property
    def output_dir(self) -> Path:
        """An empty directory that belongs to this prediction; write output files here."""
        ...

    def log(self, line: str) -> None:
        """Append one line to the prediction's logs (a newline is added)."""
        ...

    def progress(self, step: int, total: int) -> None:
        """Report that ``step`` of ``total`` steps are done; written to the logs as a tqdm line.

        Also checks for cancellation, so a predictor that reports progress every denoising step is
        canceled within one step.
        """
        ...

    def check_canceled(self) -> None:
        """Raise :class:`PredictionCanceled` if the user asked to cancel this prediction."""
        ...

    @property
    def lost(self) -> bool:
        """True once this process no longer owns the prediction (its lease passed to another worker).

        :meth:`check_canceled` raises then too; a predictor with side effects elsewhere (a forwarded
        prediction) must stop without undoing them, since the next worker resumes from its checkpoint.
        """
        ...

    @property
    def resume_data(self) -> dict[str, Any] | None:
        """The last :meth:`checkpoint` of this prediction saved by a process that died, or None."""
        ...

    def checkpoint(self, data: dict[str, Any]) -> None:
        """Save ``data`` (JSON) with the prediction, so a worker taking over after a crash can resume.

        Written with the next heartbeat (within a quarter of a second). A prediction with a checkpoint is
        put back in the queue, not failed, when its process dies; the next run gets it as :attr:`resume_data`.
        """
        ...

    def set_metric(self, name: str, value: float) -> None:
        """Report a metric of this prediction (e.g. a forwarded prediction's upstream ``predict_time``).

        Reported metrics are merged into the prediction's ``metrics``, replacing the worker's own value.
        """
        ...


class Predictor(Protocol):
    """One model's inference code. ``setup`` runs once per process, ``predict`` once per prediction."""

    def setup(self) -> None:
        """Load weights. Raise :class:`WeightsUnavailable` with an actionable message if they are missing."""
        ...

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Run one prediction on validated ``inputs``; return JSON-able output with Paths for files."""
        ...
