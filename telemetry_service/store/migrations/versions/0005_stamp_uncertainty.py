"""Samples record how uncertain their counter update instant is; sample blocks carry it with the timing state.

Blocks are derived from `samples`, so their old four-column format is simply dropped: the indexer rebuilds them
(and queries read raw rows meanwhile).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("stamp_err_s", sa.Float(), nullable=True))
    op.execute("DELETE FROM sample_blocks")
    op.execute("DELETE FROM block_watermarks")


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("stamp_err_s")
    op.execute("DELETE FROM sample_blocks")
    op.execute("DELETE FROM block_watermarks")
