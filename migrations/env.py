"""Alembic environment. The URL comes from settings; every migration runs in one transaction
under an advisory lock with timeouts, so two migrators cannot race."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from core import models  # noqa: F401  (registers the tables on the metadata)
from core.db import is_platform_object, metadata
from core.settings import get_settings

MIGRATION_LOCK_ID = 0x636F6E76  # "conv"


def _url() -> str:
    configured = context.config.attributes.get("database_url")
    return str(configured) if configured else get_settings().sqlalchemy_url


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        literal_binds=True,
        include_object=is_platform_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("SET lock_timeout = '10s'"))
        connection.execute(sa.text("SET statement_timeout = '600s'"))
        connection.execute(sa.text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
        connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                transaction_per_migration=True,
                compare_type=True,
                include_object=is_platform_object,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(sa.text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
