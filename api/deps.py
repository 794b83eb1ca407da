"""The API's dependency vocabulary: route signatures read ``sessions: Sessions,
principal: CurrentPrincipal``.

Accessors of ``app.state`` are ``async def`` because they do no I/O (a sync dependency would
cost a threadpool hop). ``CurrentPrincipal`` is sync: it queries the database with core's sync
SQLAlchemy, so FastAPI runs it in the threadpool like the endpoints themselves. The async hot
routes (api/routes/jobs.py) take ``ApiKeyCheck`` instead: the key's hash, verified by
PostgreSQL inside the statement that does the work.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import redis
from celery import Celery
from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.dispatcher import Dispatcher
from core import api_keys, async_db, db
from core.api_keys import Principal, Role
from core.auth_throttle import AuthThrottle
from core.broker.breaker import RedisBreaker
from core.errors import Forbidden, NotFound, Unauthenticated
from core.imports.registry import ImporterRegistry
from core.settings import Settings

# auto_error=False: a missing or malformed header must become our own 401 problem, not
# FastAPI's; declaring the scheme still gives /docs its "Authorize" button.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


async def _sessions(request: Request) -> db.Sessions:
    sessions: db.Sessions = request.app.state.sessions
    return sessions


async def _pool(request: Request) -> async_db.AsyncPool:
    pool: async_db.AsyncPool = request.app.state.pool
    return pool


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


async def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


async def _redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.redis
    return client


async def _breaker(request: Request) -> RedisBreaker:
    breaker: RedisBreaker = request.app.state.breaker
    return breaker


async def _throttle(request: Request) -> AuthThrottle:
    throttle: AuthThrottle = request.app.state.auth_throttle
    return throttle


async def _importers(request: Request) -> ImporterRegistry:
    importers: ImporterRegistry = request.app.state.importers
    return importers


async def _request_id(request: Request) -> str | None:
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id


Sessions = Annotated[db.Sessions, Depends(_sessions)]
Pool = Annotated[async_db.AsyncPool, Depends(_pool)]
AppSettings = Annotated[Settings, Depends(_settings)]
CeleryControl = Annotated[Celery, Depends(_celery)]
JobDispatcher = Annotated[Dispatcher, Depends(_dispatcher)]
RedisClient = Annotated[redis.Redis, Depends(_redis)]
Breaker = Annotated[RedisBreaker, Depends(_breaker)]
RequestId = Annotated[str | None, Depends(_request_id)]
Throttle = Annotated[AuthThrottle, Depends(_throttle)]
Importers = Annotated[ImporterRegistry, Depends(_importers)]


def client_address(request: Request) -> str:
    """The peer's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client is not None else "unknown"


def check_secret(request: Request, throttle: AuthThrottle, verify: Callable[[], bool]) -> bool:
    """Every credential check goes through here: an address that failed too often gets
    429 before its credential is even looked at, and each failure is counted."""
    address = client_address(request)
    throttle.check(address)
    if verify():
        return True
    throttle.record_failure(address)
    return False


def _current_principal(
    request: Request,
    sessions: Sessions,
    settings: AppSettings,
    throttle: Throttle,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthenticated()
    found: list[Principal] = []

    def verify() -> bool:
        with db.transaction(sessions) as session:
            principal = api_keys.authenticate(
                session,
                key=credentials.credentials,
                pepper=settings.secret_key.get_secret_value(),
            )
        found.extend([principal] if principal is not None else [])
        return principal is not None

    if not check_secret(request, throttle, verify):
        raise Unauthenticated("Unknown or revoked API key.")
    return found[0]


CurrentPrincipal = Annotated[Principal, Depends(_current_principal)]


@dataclass(frozen=True)
class KeyCheck:
    """The hot path's authentication: the key's hash, checked by PostgreSQL inside the
    statement that does the work (core.lifecycle.async_store), so a revoked key is refused
    by the next request in every process and no extra transaction is spent."""

    key_hash: str
    address: str
    throttle: AuthThrottle
    # The pool the checked statement runs on (part of this dependency, not one of its own:
    # each dependency FastAPI resolves costs on every hot request).
    pool: async_db.AsyncPool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[async_db.AsyncConnection]:
        """A pooled connection for the checked statement; an unknown or revoked key (the
        statement raised Unauthenticated) is counted as a failure."""
        try:
            async with async_db.connection(self.pool) as conn:
                yield conn
        except Unauthenticated:
            await anyio.to_thread.run_sync(self.throttle.record_failure, self.address)
            raise


async def _key_check(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyCheck:
    # Settings and throttle straight from app.state (no sub-dependencies): this runs on
    # every hot request, and each dependency FastAPI resolves costs.
    if credentials is None:
        raise Unauthenticated()
    settings: Settings = request.app.state.settings
    throttle: AuthThrottle = request.app.state.auth_throttle
    address = client_address(request)
    if throttle.might_limit(address):  # only then does the check touch Redis
        await anyio.to_thread.run_sync(throttle.check, address)
    key_hash = api_keys.hash_key(
        credentials.credentials, pepper=settings.secret_key.get_secret_value()
    )
    return KeyCheck(
        key_hash=key_hash, address=address, throttle=throttle, pool=request.app.state.pool
    )


ApiKeyCheck = Annotated[KeyCheck, Depends(_key_check)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Same key + same request returns the same job; a different request is a 409.",
    ),
]


def require_role(role: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through principals whose role is at least ``role``."""

    async def _require(principal: CurrentPrincipal) -> Principal:
        if not principal.role.allows(role):
            raise Forbidden(f"This action requires the {role.value} role.")
        return principal

    return _require


OperatorPrincipal = Annotated[Principal, Depends(require_role(Role.operator))]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.admin))]


def _path_uuid(raw: str, *, name: str, what: str) -> uuid.UUID:
    """A malformed id names no resource, so it answers 404 like an unknown one (not 422)."""
    try:
        return uuid.UUID(raw)
    except ValueError as error:
        raise NotFound(f"{what} not found.", where={"path": name}) from error


async def _job_id(job_id: Annotated[str, Path(description="The job's id (a UUID).")]) -> uuid.UUID:
    return _path_uuid(job_id, name="job_id", what="Job")


async def _key_id(key_id: Annotated[str, Path(description="The key's id (a UUID).")]) -> uuid.UUID:
    return _path_uuid(key_id, name="key_id", what="API key")


JobId = Annotated[uuid.UUID, Depends(_job_id)]
KeyId = Annotated[uuid.UUID, Depends(_key_id)]


async def _schedule_id(
    schedule_id: Annotated[str, Path(description="The schedule's id (a UUID).")],
) -> uuid.UUID:
    return _path_uuid(schedule_id, name="schedule_id", what="Schedule")


ScheduleId = Annotated[uuid.UUID, Depends(_schedule_id)]
