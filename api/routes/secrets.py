"""/v1/secrets: operators store secrets by name; deployments refer to them by name.

Values are encrypted before they reach the database (core/secrets/vault.py) and never leave
the API again: listing shows names, versions and dates only.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Path

from api.deps import AppSettings, OperatorPrincipal, Sessions
from api.schemas.problems import problem_responses
from api.schemas.secrets import SecretList, SecretOut, SecretValue
from core import db
from core.secrets import vault

log = structlog.get_logger(__name__)

router = APIRouter(
    prefix="/v1/secrets", tags=["secrets"], responses=problem_responses(401, 403, 503)
)

SecretName = Annotated[str, Path(description="Letters, digits, '_', '.', '-' (1-128).")]


@router.put(
    "/{name}",
    summary="Create a secret, or store a new version of it",
    responses=problem_responses(422),
)
def put_secret(
    name: SecretName,
    body: SecretValue,
    sessions: Sessions,
    settings: AppSettings,
    principal: OperatorPrincipal,
) -> SecretOut:
    vault.check_name(name, field="path.name")
    cipher = vault.Cipher.from_settings(settings)
    with db.transaction(sessions) as session:
        info = vault.put(session, cipher, name=name, value=body.as_text())
    log.info("secret.stored", secret=info.name, version=info.version, by=str(principal.id))
    return SecretOut.of(info)


@router.get("", summary="List secrets (names, versions and dates; never values)")
def list_secrets(sessions: Sessions, principal: OperatorPrincipal) -> SecretList:
    with db.transaction(sessions) as session:
        return SecretList(items=[SecretOut.of(info) for info in vault.list_secrets(session)])


@router.delete(
    "/{name}", status_code=204, summary="Delete a secret", responses=problem_responses(404)
)
def delete_secret(name: SecretName, sessions: Sessions, principal: OperatorPrincipal) -> None:
    with db.transaction(sessions) as session:
        vault.delete(session, name=name)
    log.info("secret.deleted", secret=name, by=str(principal.id))
