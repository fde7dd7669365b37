"""job enqueued_at: when the job's Celery message was last sent (the reaper re-sends lost ones)

Revision ID: ee19d42d59f7
Revises: 2659dea3130e
Create Date: 2026-11-24 06:09:15.355430

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ee19d42d59f7"
down_revision: str | Sequence[str] | None = "2659dea3130e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs queued before this column existed: count their message as sent when they were created.
    op.execute("UPDATE jobs SET enqueued_at = created_at WHERE state = 'queued'")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
