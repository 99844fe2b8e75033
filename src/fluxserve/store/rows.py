"""Plain row objects handed out by the store (no SQLAlchemy types leak past the store)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from fluxserve.lifecycle import Status


@dataclass
class KeyRow:
    """An API key (its hash only; the token is never stored)."""

    id: str
    name: str
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    webhook_secret: str | None = None
    admin: bool = False


@dataclass
class WorkerRow:
    """A worker as it last reported itself: the models it serves and the state of each."""

    id: str
    hostname: str
    models: list[str]
    started_at: datetime
    last_seen_at: datetime
    #: {model: {"state": …, "since": ISO time, "load_seconds": …, "error": …}} (see :mod:`fluxserve.modelstate`).
    model_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: {"sku": …, "name": …} (see :mod:`fluxserve.worker.hardware`); empty for workers that predate it.
    hardware: dict[str, str] = field(default_factory=dict)


@dataclass
class UsageRow:
    """What one key used: its predictions by status, the images they made and the seconds they ran.

    Read from the predictions' status and ``metrics``, which retention keeps, so it outlives the data.
    """

    predictions: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    image_count: int = 0
    predict_time: float = 0.0

    @property
    def in_progress(self) -> int:
        """Predictions not finished yet (queued or running)."""
        return self.predictions - self.succeeded - self.failed - self.canceled


def db_text(text: str | None) -> str | None:
    """``text`` as every database stores it: PostgreSQL text refuses NUL, and neither side can encode a lone
    surrogate, so a predictor's error (or a log line) holding one is kept, readable, instead of failing the
    write."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass
class PredictionRow:
    """One prediction: the job and its result."""

    id: str
    key_id: str
    model: str
    version: str
    input: dict[str, Any] | None
    status: Status
    created_at: datetime
    source: str = "api"
    output: Any = None
    logs: str | None = ""
    error: str | None = None
    data_removed: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deadline: datetime | None = None
    metrics: dict[str, Any] | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    cancel_requested: bool = False
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    attempts: int = 0
    api_base: str | None = None
    checkpoint: dict[str, Any] | None = None
    #: ``owner/name`` of the deployment it was created through.
    deployment: str | None = None
    #: "example" or "default" when an operator made it one of its model's examples (kept past retention).
    example: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Any) -> PredictionRow:
        """Build from a SQLAlchemy row mapping."""
        values = {f.name: mapping[f.name] for f in fields(cls)}
        values["status"] = Status(values["status"])
        return cls(**values)

    def to_values(self) -> dict[str, Any]:
        """Column values for an INSERT."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["status"] = self.status.value
        values["logs"], values["error"] = db_text(self.logs), db_text(self.error)
        return values


@dataclass
class FileRow:
    """An uploaded file's record (its bytes live in blob storage under ``files/<id>``)."""

    id: str
    key_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    md5: str
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime

    @property
    def blob_key(self) -> str:
        """Where the bytes are stored."""
        return f"files/{self.id}/content"


@dataclass
class DeploymentRow:
    """A named, owner-scoped configuration of a model (Replicate's deployment) and its current release."""

    owner: str
    name: str
    model: str
    version: str
    hardware: str
    min_instances: int
    max_instances: int
    release_number: int
    created_at: datetime
    release_created_at: datetime
    created_by: str

    @classmethod
    def from_mapping(cls, mapping: Any) -> DeploymentRow:
        """Build from a SQLAlchemy row mapping."""
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})
