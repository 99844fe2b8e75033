"""Deployments; predictions remember their deployment and whether they are a model's example; workers
report their hardware.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from fluxserve.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("deployment", sa.String(401), nullable=True))
    op.add_column("predictions", sa.Column("example", sa.String(8), nullable=True))
    op.add_column("workers", sa.Column("hardware", sa.JSON(), nullable=True))
    op.create_table(
        "deployments",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("hardware", sa.String(100), nullable=False),
        sa.Column("min_instances", sa.Integer(), nullable=False),
        sa.Column("max_instances", sa.Integer(), nullable=False),
        sa.Column("release_number", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("release_created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployments")
    op.drop_column("workers", "hardware")
    op.drop_column("predictions", "example")
    op.drop_column("predictions", "deployment")
