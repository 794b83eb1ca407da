"""jobs: trace_id and traceparent (one job, one trace)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace_id", sa.Text()))
    op.add_column("jobs", sa.Column("traceparent", sa.Text()))


def downgrade() -> None:
    op.drop_column("jobs", "traceparent")
    op.drop_column("jobs", "trace_id")
