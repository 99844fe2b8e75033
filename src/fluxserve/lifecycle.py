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
#: A prediction whose worker stopped renewing its lease (it died, or lost the database for a whole lease).
LEASE_LOST_ERROR = (
    "The worker running this prediction was lost (it stopped renewing its lease), so the prediction did not "
    "finish. Create it again."
)
#: A prediction that was running when the single-process (SQLite) server stopped.
RESTART_ERROR = (
    "The server stopped while this prediction was running, so it did not finish. It was not retried "
    "automatically; create it again."
)
#: What a queued prediction's logs say while it waits: no worker serves its model, the model is loading, or
#: where it stands in the queue (a line each time it moves: logs only grow).
NO_WORKER_LOG = (
    "Waiting for a worker: no running worker serves {model} right now. "
    "The prediction stays queued and starts when one does.\n"
)
LOADING_LOG = "Waiting for {model} to load on a worker; the prediction starts once it is ready.\n"


def queue_line(ahead: int) -> str:
    """The log line of a queued prediction with ``ahead`` predictions before it."""
    if ahead == 0:
        return "Waiting in queue: next in line\n"
    return f"Waiting in queue: {ahead} prediction{'s' if ahead != 1 else ''} ahead\n"


#: Logged on a prediction put back in the queue to be resumed from its checkpoint.
RESUME_NOTE = "The server running this prediction stopped; it will be resumed from where it was."
#: ``RunContext.stop_reason`` when this worker lost the prediction to another (its lease expired): the predictor
#: must stop without side effects (a forwarded prediction must not cancel the upstream run the next worker resumes).
STOP_LEASE_LOST = "lease lost"
#: Other stop reasons: the prediction's ``Cancel-After`` deadline, and the server's run-time limit.
STOP_DEADLINE = "deadline"
STOP_RUN_TIME = "run-time limit"
