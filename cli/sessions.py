"""A short-lived database session factory for command-line chores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core import db
from core.settings import Settings


@contextmanager
def open_sessions(settings: Settings) -> Iterator[db.Sessions]:
    engine = db.make_engine(settings, pool_size=1)
    try:
        yield db.make_sessionmaker(engine)
    finally:
        engine.dispose()
