"""Predictions carry a checkpoint: what a predictor needs to resume after its process died.

A forwarded prediction stores its upstream prediction id there, so a restart follows the upstream
prediction instead of failing it (and paying for it twice if the user runs it again).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("checkpoint", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("predictions", "checkpoint")
