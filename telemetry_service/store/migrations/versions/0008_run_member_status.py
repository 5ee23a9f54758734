"""Each member of a run (one process on one node) has its own status, end, tags and last sign of life.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_members") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="running"))
        batch.add_column(sa.Column("ended_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("last_seen_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("pid_visible", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Members of runs that already ended ended with them: the run's status and end were all that was known.
    op.execute("UPDATE run_members SET status = (SELECT status FROM runs WHERE runs.id = run_members.run_pk), "
               "ended_at = (SELECT ended_at FROM runs WHERE runs.id = run_members.run_pk) "
               "WHERE run_pk IN (SELECT id FROM runs WHERE status != 'running')")


def downgrade() -> None:
    with op.batch_alter_table("run_members") as batch:
        for column in ("pid_visible", "last_seen_at", "tags", "ended_at", "status"):
            batch.drop_column(column)
