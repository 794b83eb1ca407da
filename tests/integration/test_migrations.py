"""Migrations against real PostgreSQL: they build exactly the schema the models describe (no
drift either way), and every connection the platform opens carries its guards."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import db, models  # noqa: F401  (models registers the tables)
from core.settings import Settings


def test_migrations_match_the_models(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_every_connection_has_timeouts_and_keepalives(database_url: str) -> None:
    settings = Settings(
        env="test",
        database_url=database_url,
        database_statement_timeout=7,
        database_lock_timeout=3,
        database_idle_in_transaction_timeout=11,
        database_keepalive_seconds=6,
    )
    engine = db.make_engine(settings, pool_size=1)
    try:
        with engine.connect() as connection:
            shown = {
                name: connection.execute(sa.text(f"SHOW {name}")).scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                    "tcp_keepalives_idle",
                    "tcp_keepalives_interval",
                    "tcp_keepalives_count",
                    "tcp_user_timeout",
                )
            }
            client_side = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert shown == {
        "statement_timeout": "7s",
        "lock_timeout": "3s",
        "idle_in_transaction_session_timeout": "11s",
        "tcp_keepalives_idle": "6",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "18000",
    }
    assert client_side["keepalives_idle"] == "6"
    assert client_side["tcp_user_timeout"] == "18000"
