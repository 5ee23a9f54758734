"""Cumulative CPU seconds of the host and of the runs' processes (for a run's share of CPU energy), and the
known idle power of a device.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("idle_power_w", sa.Float(), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("cpu_busy_s", sa.Float(), nullable=True))
    with op.batch_alter_table("process_samples") as batch:
        batch.add_column(sa.Column("cpu_time_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("process_samples") as batch:
        batch.drop_column("cpu_time_s")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("cpu_busy_s")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("idle_power_w")
