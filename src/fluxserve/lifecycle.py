"""The prediction status machine, as pure functions."""

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

_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.STARTING: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELED}),
    Status.PROCESSING: TERMINAL,
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
}


def can_transition(current: Status, new: Status) -> bool:
    """Whether ``current`` may move to ``new``."""
    return new in _ALLOWED[current]
