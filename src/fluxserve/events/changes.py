"""One seam for "a prediction changed": a worker's (or the housekeeping's) changes are folded here, in one
place, into the event hub (streams, waits, web pages), the webhook sender and the metrics.

The kinds follow Cog's webhook event vocabulary: ``start``, ``logs``, ``output`` and ``completed``; rows
changed in bulk (reaped, recovered, failed with their model, told their queue position) are ``touched``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fluxserve.events.hub import PREDICTION, EventHub
from fluxserve.events.webhooks import wants
from fluxserve.store.rows import PredictionRow

if TYPE_CHECKING:
    from fluxserve.events.webhooks import WebhookSender
    from fluxserve.metrics.prometheus import Metrics


class PredictionChanges:
    """Where a worker reports how its predictions change."""

    def __init__(self, hub: EventHub, webhooks: WebhookSender | None = None, metrics: Metrics | None = None):
        self.hub = hub
        self.webhooks = webhooks
        self.metrics = metrics

    def started(self, row: PredictionRow) -> None:
        """A worker claimed ``row`` (now ``processing``)."""
        self.hub.publish(PREDICTION, row.id, row)
        if self.webhooks is not None:
            self.webhooks.event(row, "start")

    def logged(self, row: PredictionRow) -> None:
        """New logs of ``row`` (as written) were stored."""
        self.hub.publish(PREDICTION, row.id)
        if self.webhooks is not None:
            self.webhooks.event(row, "logs")

    def completed(self, row: PredictionRow) -> None:
        """``row`` reached its terminal state (its terminal webhook is already in the outbox, same transaction)."""
        if self.metrics is not None and row.completed_at is not None:
            self.metrics.prediction_finished(
                row.model,
                row.status.value,
                created_at=row.created_at,
                started_at=row.started_at,
                completed_at=row.completed_at,
                image_count=(row.metrics or {}).get("image_count"),
            )
        self.hub.publish(PREDICTION, row.id, row)
        if self.webhooks is not None:
            if row.output is not None:
                self.webhooks.event(row, "output")
            self.webhooks.forget(row.id)
            if wants(row, "completed"):
                # Its outbox row was just written: send it now rather than at the sender's next poll. Only
                # then: a wake costs the sender an outbox claim, which most predictions (no webhook) never need.
                self.webhooks.wake.set()

    def touched(self, prediction_ids: list[str]) -> None:
        """Rows changed in bulk by a query: whoever follows them re-reads."""
        for pid in prediction_ids:
            self.hub.publish(PREDICTION, pid)
