"""Prometheus metrics of one process.

Every process (API replica or worker) has its own :class:`Metrics` with its own registry and
exposes only what it did itself; Prometheus sums across processes. Queue depth is the exception:
it is read from the database at scrape time, so every API replica reports the same, shared value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
#: Seconds; most API calls answer in a few milliseconds (``Prefer: wait`` holds up to 60 s).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The route label of requests no route matched (a fixed value: raw paths would explode the label set).
UNMATCHED_ROUTE = "<unmatched>"

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metric objects of one process, in a registry of their own (not the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.predictions_created = Counter(
            "fluxserve_predictions_created", "Predictions created by this process.", ["model"], registry=r
        )
        self.predictions_finished = Counter(
            "fluxserve_predictions_finished",
            "Predictions this process's worker finished, by terminal status.",
            ["model", "status"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "fluxserve_queue_depth",
            "Predictions waiting for a worker (read from the database at scrape time; shared by all processes).",
            ["model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "fluxserve_queue_wait_seconds",
            "Time from creation to a worker starting the prediction.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.predict_time = Histogram(
            "fluxserve_predict_time_seconds",
            "Time a worker spent running a prediction (the predict_time metric).",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.images_generated = Counter(
            "fluxserve_images_generated", "Output files of succeeded predictions.", ["model"], registry=r
        )
        self.webhook_deliveries = Counter(
            "fluxserve_webhook_deliveries",
            "Webhook requests sent: kind 'event' (start/output/logs, best effort) or 'completed' (outbox); "
            "outcome success, http_error, network_error or unsafe_url.",
            ["kind", "outcome"],
            registry=r,
        )
        self.webhook_failures = Counter(
            "fluxserve_webhook_failures",
            "Webhooks given up on: a failed best-effort event, or a completed delivery out of retries or refused.",
            ["kind"],
            registry=r,
        )
        self.http_latency = Histogram(
            "fluxserve_http_request_duration_seconds",
            "HTTP request latency by method, route template and status (streams: until they close).",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        # labels() validates and locks on each call; the API serves thousands of requests a second.
        self._http_children: dict[tuple[str, str, int], Any] = {}

    # --- hooks ----------------------------------------------------------------------------------------

    def prediction_created(self, model: str) -> None:
        """Count a prediction this process queued."""
        self.predictions_created.labels(model).inc()

    def prediction_finished(
        self,
        model: str,
        status: str,
        *,
        created_at: datetime,
        started_at: datetime | None,
        completed_at: datetime,
        image_count: int | None,
    ) -> None:
        """Count a prediction a worker of this process finished, with its timings and images."""
        self.predictions_finished.labels(model, status).inc()
        if started_at is not None:
            self.queue_wait.labels(model).observe(max(0.0, (started_at - created_at).total_seconds()))
            self.predict_time.labels(model).observe(max(0.0, (completed_at - started_at).total_seconds()))
        if image_count:
            self.images_generated.labels(model).inc(image_count)

    def webhook_sent(self, kind: str, outcome: str) -> None:
        """Count one webhook request and how it went."""
        self.webhook_deliveries.labels(kind, outcome).inc()

    def webhook_failed(self, kind: str) -> None:
        """Count a webhook given up on."""
        self.webhook_failures.labels(kind).inc()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request."""
        key = (method, route, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_latency.labels(method, route, str(status))
        child.observe(seconds)

    def render(self, queue_depths: dict[str, int] | None) -> bytes:
        """The text exposition; ``queue_depths`` None (database unreachable) leaves the gauge out."""
        self.queue_depth.clear()
        for model, depth in (queue_depths or {}).items():
            self.queue_depth.labels(model).set(depth)
        return generate_latest(self.registry)
