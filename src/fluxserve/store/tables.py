"""SQLAlchemy table definitions. The prediction row is the job: there is no second queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to UTCDateTime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    # SHA-256 hex of the token: the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    # Standard Webhooks signing secret ("whsec_<base64>"), made on first use.
    Column("webhook_secret", String(100), nullable=True),
    # Admin keys may also load and unload models on the workers.
    Column("admin", Boolean, nullable=False, default=False, server_default=false()),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("input", JSON, nullable=True),
    Column("output", JSON, nullable=True),
    Column("logs", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("source", String(8), nullable=False),
    Column("data_removed", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("completed_at", UTCDateTime(), nullable=True),
    Column("deadline", UTCDateTime(), nullable=True),
    Column("metrics", JSON, nullable=True),
    Column("webhook", Text, nullable=True),
    Column("webhook_events_filter", JSON, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Claim/lease: a worker writes only while its token matches (compare-and-set).
    Column("lease_token", String(32), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("worker_id", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    # The API base the creating request used (e.g. https://h/replicate/v1): webhook bodies carry
    # the same URLs that client saw.
    Column("api_base", Text, nullable=True),
    # What the predictor needs to resume after its process died (a forwarded prediction's upstream id).
    Column("checkpoint", JSON(none_as_null=True), nullable=True),
    # The queue position last written to a queued prediction's logs (so each move is logged once).
    Column("queue_position", Integer, nullable=True),
    Column("deployment", String(401), nullable=True),
    # "example" or "default": one of its model's examples, kept past the retention period.
    Column("example", String(8), nullable=True),
    Index("ix_predictions_queue", "status", "model", "created_at"),
    Index("ix_predictions_key_created", "key_id", "created_at", "id"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("hostname", String(200), nullable=False),
    Column("models", JSON, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    # Renewed every few seconds; a worker not seen for a lease period counts as gone.
    Column("last_seen_at", UTCDateTime(), nullable=False),
    # {model: {"state": "loading" | "ready" | "offloaded" | "unloaded" | "failed", …}} as of last_seen_at.
    Column("model_states", JSON(none_as_null=True), nullable=True),
    # Operator requests waiting for the worker: [{"action": "load" | "unload", "model": "o/n"}].
    Column("requests", JSON(none_as_null=True), nullable=True),
    # {"sku": "gpu-h100", "name": "NVIDIA H100 80GB HBM3"}: what GET /v1/hardware lists.
    Column("hardware", JSON(none_as_null=True), nullable=True),
)

deployments = Table(
    "deployments",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("hardware", String(100), nullable=False),
    Column("min_instances", Integer, nullable=False),
    Column("max_instances", Integer, nullable=False),
    Column("release_number", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("release_created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(200), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # The Standard Webhooks message id ("msg_…"): the same on every retry.
    Column("id", String(40), primary_key=True),
    Column("prediction_id", String(32), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(12), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("md5", String(32), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index("ix_files_key_created", "key_id", "created_at", "id"),
)
