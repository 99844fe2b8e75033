"""The prediction status machine.

starting → processing → succeeded | failed | canceled; starting → canceled | failed. The store
enforces the transitions with compare-and-set updates (``WHERE status = …``). One way back:
processing → starting, when the process running a prediction that saved a checkpoint (a forwarded one)
died; the next worker resumes it from the checkpoint instead of failing it.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The five classic Replicate statuses; the only ones ever sent (never ``aborted``)."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """Terminal objects never change again, apart from data removal."""
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

#: Why a prediction ended without the user asking: shared by the worker and the housekeeping loop.
DEADLINE_ERROR = "The prediction was canceled: its deadline (Cancel-After) passed before it finished."
RUN_TIME_ERROR = "The prediction ran longer than the server's {limit:.0f}-second limit and was stopped."
#: Logged on a prediction put back in the queue to be resumed from its checkpoint.
RESUME_NOTE = "The server running this prediction stopped; it will be resumed from where it was."
#: ``RunContext.stop_reason`` when this worker lost the prediction to another (its lease expired): the predictor
#: must stop without side effects (a forwarded prediction must not cancel the upstream run the next worker resumes).
STOP_LEASE_LOST = "lease lost"
