"""Turn store rows into wire objects (the only place output blob refs become URLs)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from fluxserve.api.links import Links
from fluxserve.lifecycle import Status
from fluxserve.schema import Metrics, Prediction, PredictionUrls
from fluxserve.storage import map_blob_refs
from fluxserve.store.rows import PredictionRow

JSON_TYPE = "application/json; charset=utf-8"


def render_prediction(row: PredictionRow, links: Links, *, status: Status | None = None) -> Prediction:
    """The wire object for ``row``; ``status`` overrides the reported status (``Prefer: wait`` timeout)."""
    return Prediction(
        id=row.id,
        model=row.model,
        version=row.version,
        input=row.input,
        logs=row.logs,
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
    )


def json_response(model: BaseModel, status_code: int = 200, headers: dict[str, Any] | None = None) -> Response:
    """Serialise a wire model with pydantic-core (fast) into a JSON response."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON_TYPE, headers=headers)
