"""Time as the database sees it: every timestamp a job row holds is PostgreSQL's ``now()``, so
workers with skewed clocks still agree on when a lease expires."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa


def now() -> sa.ColumnElement[datetime]:
    return sa.func.now()


def in_seconds(seconds: float) -> sa.ColumnElement[datetime]:
    """``now()`` plus ``seconds`` (negative: in the past)."""
    return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(seconds))
