"""The wire format (pydantic): the one definition of every object the API sends or accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from fluxserve.lifecycle import Status


def format_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z``, as Replicate sends them."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]

WebhookEvent = Literal["start", "output", "logs", "completed"]


class PredictionUrls(BaseModel):
    """Links of a prediction; all absolute, all on the host and prefix the request used."""

    get: str
    cancel: str
    stream: str
    web: str


class Metrics(BaseModel):
    """Timings of a finished prediction."""

    model_config = ConfigDict(extra="allow")

    predict_time: float | None = None
    total_time: float | None = None
    image_count: int | None = None

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


# Keys left out of the JSON while unset, as Replicate does (clients treat them as optional).
_OMIT_WHEN_NONE = frozenset(
    {"started_at", "completed_at", "deadline", "metrics", "webhook", "webhook_events_filter", "deployment"}
)


class Prediction(BaseModel):
    """A prediction as every endpoint returns it."""

    id: str = Field(description="26 lower-case base32 characters")
    model: str
    version: str = Field(description='A 64-hex version id, or "hidden" for model-route predictions')
    input: dict[str, Any] = Field(
        default_factory=dict, description="As sent, less ignored keys; {} once the data is removed"
    )
    logs: str = Field("", description='"" once the data is removed')
    output: Any = None
    data_removed: bool = False
    error: str | None = None
    source: Literal["api", "web"] = "api"
    status: Status
    created_at: Timestamp
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    deadline: Timestamp | None = None
    urls: PredictionUrls
    metrics: Metrics | None = None
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    deployment: str | None = Field(None, description="owner/name of the deployment it was created through")

    @field_validator("input", "logs", mode="before")
    @classmethod
    def _removed_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        # Other servers (and Replicate's creation responses) send null or nothing; read it as empty.
        if value is None:
            return {} if info.field_name == "input" else ""
        return value

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in _OMIT_WHEN_NONE:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class PredictionRequest(BaseModel):
    """Body of ``POST /predictions`` and ``POST /models/{owner}/{name}/predictions``.

    Unknown top-level keys are refused, as Replicate refuses them (``additionalProperties: false``), so a
    typo such as ``inptu`` is named rather than silently dropped.
    """

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any]
    version: str | None = Field(
        default=None, description="Version id, owner/name, or owner/name:version_id (on /predictions only)"
    )
    model: str | None = Field(default=None, description="owner/name, accepted on /predictions as gateways do")
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    webhook_completed: str | None = Field(
        default=None, description="Sent by replicate-python 1.x when given; accepted and ignored (use webhook)"
    )
    stream: bool | None = Field(default=None, description="Deprecated; urls.stream is always returned")


class PredictionPage(BaseModel):
    """A page of predictions, newest first; ``next`` is an absolute URL or null."""

    next: str | None
    previous: str | None
    results: list[Prediction]


class InvalidFieldOut(BaseModel):
    """One refused field of a 422."""

    type: str
    field: str
    description: str


class Problem(BaseModel):
    """RFC 7807 problem details, as Replicate's API sends them."""

    title: str
    detail: str
    status: int
    invalid_fields: list[InvalidFieldOut] | None = None


class Version(BaseModel):
    """A model version: its id and Cog-style OpenAPI schema."""

    id: str
    created_at: Timestamp
    cog_version: str
    openapi_schema: dict[str, Any]


class ModelWorker(BaseModel):
    """One model's state on one worker (fluxserve extension)."""

    worker: str
    state: Literal["loading", "ready", "offloaded", "unloaded", "failed"] | None
    since: datetime | None = Field(None, description="When the model entered this state")
    seconds: float | None = Field(None, description="Seconds in this state so far (how long a load has taken)")
    load_seconds: float | None = Field(None, description="How long its last load or swap-in took")
    error: str | None = None


class Model(BaseModel):
    """A model as ``GET /models/{owner}/{name}`` returns it."""

    url: str
    owner: str
    name: str
    description: str | None
    visibility: Literal["public", "private"] = "public"
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    run_count: int = 0
    created_at: Timestamp | None = None
    cover_image_url: str | None = Field(None, description="The first image of the default example")
    default_example: Prediction | None = Field(None, description="The example an operator chose for the model")
    latest_version: Version | None
    is_official: bool = True
    live_workers: int = Field(0, description="Running workers that serve this model (fluxserve extension)")
    queued_predictions: int = Field(0, description="Predictions waiting for a worker (fluxserve extension)")
    state: Literal["ready", "loading", "failed", "no_worker"] = Field(
        "no_worker",
        description="Whether the model takes predictions now: ready (some worker runs it), loading, failed (every "
        "worker serving it failed to load it; see error) or no_worker (fluxserve extension)",
    )
    workers: list[ModelWorker] = Field(
        default_factory=list, description="The model's state on each live worker that serves it (fluxserve extension)"
    )
    error: str | None = Field(None, description="Why the model failed to load, when state is failed")


class ModelAction(BaseModel):
    """An operator request accepted: the workers it was sent to (fluxserve extension)."""

    model: str
    action: Literal["load", "unload"]
    workers: list[str] = Field(description="Ids of the live workers asked to carry it out")


class ModelPage(BaseModel):
    """A page of models."""

    next: str | None
    previous: str | None
    results: list[Model]


class VersionPage(BaseModel):
    """A page of versions."""

    next: str | None
    previous: str | None
    results: list[Version]


class Usage(BaseModel):
    """What a key used: the figures a gateway bills by (CometAPI reports ``image_count`` and ``predict_time``).

    Counts the key's predictions created in the window ``created_after`` … ``created_before`` (both
    null: all time). Retention does not change them: status and metrics outlive a prediction's data.
    """

    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    predictions: int = Field(description="Predictions created")
    succeeded: int
    failed: int
    canceled: int
    in_progress: int = Field(description="Predictions still queued or running")
    image_count: int = Field(description="Output files of succeeded predictions")
    predict_time: float = Field(description="Seconds workers spent running the predictions (all statuses)")


class Account(BaseModel):
    """The account behind the key in use (Replicate's fields, plus fluxserve's ``usage``); no ``github_url``:
    Replicate's document types it as a URI string, so it is left out rather than null."""

    type: Literal["user", "organization"] = "user"
    username: str
    name: str
    usage: Usage | None = None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the service reads)."""
    return datetime.now(UTC)
