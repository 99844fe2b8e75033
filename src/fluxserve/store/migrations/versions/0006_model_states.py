"""Workers report the state of each model (loading, ready, failed…) and take operator requests;
queued predictions remember the queue position last written to their logs.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("model_states", sa.JSON(), nullable=True))
    op.add_column("workers", sa.Column("requests", sa.JSON(), nullable=True))
    op.add_column("predictions", sa.Column("queue_position", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("api_keys", "admin")
    op.drop_column("predictions", "queue_position")
    op.drop_column("workers", "requests")
    op.drop_column("workers", "model_states")
