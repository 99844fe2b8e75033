"""In-process event hub: wake-ups keyed by (channel, key). Payloads stay tiny; readers re-read the row.

The same shape maps onto PostgreSQL ``LISTEN/NOTIFY`` for multi-process deployments (one channel per
kind, the prediction id or model as payload).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

PREDICTION = "prediction"  # key: prediction id; any change to the row
CANCEL = "cancel"  # key: prediction id; the user asked to cancel a running prediction
WORK = "work"  # key: model ref; a new prediction is queued
ANY = "*"


class EventHub:
    """Publish/subscribe within one event loop. Subscribers get an :class:`asyncio.Event` to wait on."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)

    def publish(self, channel: str, key: str) -> None:
        """Wake every subscriber of ``(channel, key)`` and of ``(channel, "*")``."""
        for sub_key in (key, ANY):
            for event in self._subscribers.get((channel, sub_key), ()):
                event.set()

    @contextmanager
    def subscribe(self, channel: str, key: str = ANY) -> Iterator[asyncio.Event]:
        """Subscribe for the duration of a ``with`` block; clear the event after each wake-up."""
        event = asyncio.Event()
        subscribers = self._subscribers[(channel, key)]
        subscribers.add(event)
        try:
            yield event
        finally:
            subscribers.discard(event)
            if not subscribers:
                self._subscribers.pop((channel, key), None)
