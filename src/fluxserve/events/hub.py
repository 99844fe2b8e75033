"""In-process event hub: wake-ups keyed by (channel, key). Payloads stay tiny; readers re-read the row.

Within one process a publisher may attach the new state of the row (``payload``) so a waiter can
skip the re-read. The same shape maps onto PostgreSQL ``LISTEN/NOTIFY`` for multi-process
deployments (one channel per kind, the prediction id or model as payload, no row).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PREDICTION = "prediction"  # key: prediction id; any change to the row
CANCEL = "cancel"  # key: prediction id; the user asked to cancel a running prediction
WORK = "work"  # key: model ref; a new prediction is queued
ANY = "*"
#: WORK key of an operator request (load/unload a model): wakes workers to read their requests now.
OPERATOR = "@operator"


class Subscription:
    """What a subscriber waits on: an event, and the payload of the latest publication (or None)."""

    __slots__ = ("event", "fired", "payload")

    def __init__(self, event: asyncio.Event | None = None) -> None:
        self.event = event or asyncio.Event()
        self.fired = False
        self.payload: Any = None

    def take(self) -> Any:
        """Clear the event and return (and forget) the latest payload."""
        self.event.clear()
        self.fired = False
        payload, self.payload = self.payload, None
        return payload


class EventHub:
    """Publish/subscribe within one event loop; ``forward`` carries publications to other processes."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self.forward: Callable[[str, str], None] | None = None

    def publish(self, channel: str, key: str, payload: Any = None) -> None:
        """Wake local subscribers (see :meth:`deliver`) and tell other processes, if connected."""
        self.deliver(channel, key, payload)
        if self.forward is not None:
            self.forward(channel, key)

    def wake_all(self) -> None:
        """Wake every subscriber with no payload, so each re-reads (after events may have been missed)."""
        for subscribers in self._subscribers.values():
            for sub in subscribers:
                sub.payload = None
                sub.fired = True
                sub.event.set()

    def deliver(self, channel: str, key: str, payload: Any = None) -> None:
        """Wake every local subscriber of ``(channel, key)`` and of ``(channel, "*")``.

        ``payload`` replaces the subscriber's previous one, so a publication without a payload
        forces subscribers to re-read.
        """
        for sub_key in (key, ANY):
            for sub in self._subscribers.get((channel, sub_key), ()):
                sub.payload = payload
                sub.fired = True
                sub.event.set()

    @contextmanager
    def subscribe(self, channel: str, key: str = ANY, event: asyncio.Event | None = None) -> Iterator[Subscription]:
        """Subscribe for the duration of a ``with`` block; ``event`` lets one task wait on several things."""
        sub = Subscription(event)
        subscribers = self._subscribers[(channel, key)]
        subscribers.add(sub)
        try:
            yield sub
        finally:
            subscribers.discard(sub)
            if not subscribers:
                self._subscribers.pop((channel, key), None)
