"""Webhooks: per-key signing secrets, the creating request's API base, and the delivery outbox.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from fluxserve.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(100), nullable=True))
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("api_base", sa.Text(), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("prediction_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("api_base")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("webhook_secret")
