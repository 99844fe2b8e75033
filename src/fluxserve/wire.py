"""The wire view of a stored prediction: absolute links and the rendered object.

Shared by the API (links from each request) and the worker (webhook bodies, rendered with the
links of the request that created the prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxserve.lifecycle import Status
from fluxserve.schema import Metrics, Prediction, PredictionUrls
from fluxserve.storage import map_blob_refs
from fluxserve.store.rows import PredictionRow

#: Where the API is mounted; the Replicate paths follow each prefix.
API_PREFIXES = ("/v1", "/replicate/v1")


@dataclass(frozen=True)
class Links:
    """URL builder for one request. ``origin`` has no trailing slash; ``api`` ends in ``/v1``."""

    origin: str
    api: str

    def prediction(self, prediction_id: str) -> str:
        """``urls.get``."""
        return f"{self.api}/predictions/{prediction_id}"

    def prediction_urls(self, prediction_id: str) -> dict[str, str]:
        """The four ``urls`` of a prediction."""
        get = self.prediction(prediction_id)
        return {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{get}/stream",
            "web": f"{self.origin}/p/{prediction_id}",
        }

    def output(self, key: str) -> str:
        """Where the output blob ``key`` is served."""
        return f"{self.api}/outputs/{key}"

    @classmethod
    def from_api_base(cls, api_base: str) -> Links:
        """Links from an API base such as ``https://h/replicate/v1`` (as stored with a prediction)."""
        for prefix in sorted(API_PREFIXES, key=len, reverse=True):
            if api_base.endswith(prefix):
                return cls(origin=api_base[: -len(prefix)], api=api_base)
        return cls(origin=api_base, api=api_base)


def render_prediction(row: PredictionRow, links: Links, *, status: Status | None = None) -> Prediction:
    """The wire object for ``row``; ``status`` overrides the reported status (``Prefer: wait`` timeout)."""
    return Prediction(
        id=row.id,
        model=row.model,
        version=row.version,
        # After data removal: empty, not null (Replicate's document types them object and string; strict
        # clients such as the 2.x SDK refuse a whole page over one null).
        input=row.input if row.input is not None else {},
        logs=row.logs if row.logs is not None else "",
        output=map_blob_refs(row.output, links.output),
        data_removed=row.data_removed,
        error=row.error,
        source="web" if row.source == "web" else "api",
        status=status or row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        deadline=row.deadline,
        urls=PredictionUrls(**links.prediction_urls(row.id)),
        metrics=Metrics(**row.metrics) if row.metrics else None,
        webhook=row.webhook,
        webhook_events_filter=row.webhook_events_filter,  # type: ignore[arg-type]
        deployment=row.deployment,
    )
