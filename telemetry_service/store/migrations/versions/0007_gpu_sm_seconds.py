"""Cumulative SM-seconds of each process on each GPU (for a run's share of a GPU it shares with other runs).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("process_samples") as batch:
        batch.add_column(sa.Column("gpu_sm_s", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("process_samples") as batch:
        batch.drop_column("gpu_sm_s")
