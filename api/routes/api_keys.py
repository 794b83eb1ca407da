"""/v1/api-keys: admin-only key management. Keys are stored hashed; the plain key is returned
once, at creation."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query

from api.deps import AdminPrincipal, AppSettings, KeyId, Sessions
from api.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from api.schemas.problems import problem_responses
from core import api_keys, db
from core.lifecycle import commands

log = structlog.get_logger(__name__)

router = APIRouter(
    prefix="/v1/api-keys", tags=["api-keys"], responses=problem_responses(401, 403, 503)
)


@router.get("", summary="List API keys")
def list_keys(sessions: Sessions, admin: AdminPrincipal) -> ApiKeyList:
    with db.transaction(sessions) as session:
        return ApiKeyList(items=[ApiKeyOut.from_row(row) for row in api_keys.list_keys(session)])


@router.post("", status_code=201, summary="Create an API key", responses=problem_responses(422))
def create_key(
    body: ApiKeyCreate, sessions: Sessions, settings: AppSettings, admin: AdminPrincipal
) -> ApiKeyCreated:
    with db.transaction(sessions) as session:
        row, plain = api_keys.create_key(
            session,
            name=body.name,
            role=body.role,
            pepper=settings.secret_key.get_secret_value(),
        )
        created = ApiKeyCreated(id=row.id, name=row.name, role=body.role, key=plain)
    log.info("api_key.created", key_id=str(created.id), role=body.role.value, by=str(admin.id))
    return created


@router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    description=(
        "The key stops working at once. Its queued jobs are cancelled and its running jobs "
        "asked to stop, unless `cancel_jobs=false`. The last active admin key cannot be "
        "revoked (409 `last_admin_key`)."
    ),
    responses=problem_responses(404, 409, 422),
)
def revoke_key(
    key_id: KeyId,
    sessions: Sessions,
    admin: AdminPrincipal,
    cancel_jobs: Annotated[bool, Query(description="Stop the key's jobs too.")] = True,
) -> None:
    with db.transaction(sessions) as session:
        api_keys.revoke_key(session, key_id=key_id)
        stopped = (
            commands.cancel_jobs_of_principal(session, principal_id=key_id) if cancel_jobs else 0
        )
    log.info("api_key.revoked", key_id=str(key_id), by=str(admin.id), jobs_stopped=stopped)
