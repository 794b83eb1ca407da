"""API keys and roles (domain only, no HTTP). Keys are random tokens stored as HMAC-SHA256."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.errors import LastAdminKey, NotFound
from core.models import ApiKey

KEY_PREFIX = "cvk_"


class Role(enum.StrEnum):
    submitter = "submitter"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


@dataclass(frozen=True)
class Principal:
    id: uuid.UUID
    name: str
    role: Role
    scopes: frozenset[str] = frozenset()  # e.g. "imports:products" (see importer declarations)

    @property
    def sees_all_jobs(self) -> bool:
        return self.role.allows(Role.operator)


def hash_key(key: str, *, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def create_key(
    session: Session,
    *,
    name: str,
    role: Role,
    pepper: str,
    scopes: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plain text, which is never stored."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        role=role.value,
        key_hash=hash_key(plain, pepper=pepper),
        scopes=sorted(set(scopes)),
    )
    session.add(row)
    session.flush()
    return row, plain


def authenticate(session: Session, *, key: str, pepper: str) -> Principal | None:
    row = session.scalar(
        sa.select(ApiKey).where(
            ApiKey.key_hash == hash_key(key, pepper=pepper), ApiKey.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    return Principal(id=row.id, name=row.name, role=Role(row.role), scopes=frozenset(row.scopes))


def active_principal(session: Session, key_id: uuid.UUID) -> Principal | None:
    """The principal of a key that is not revoked (a schedule's owner), or None."""
    row = session.scalar(sa.select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    return Principal(id=row.id, name=row.name, role=Role(row.role), scopes=frozenset(row.scopes))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key; refuses to leave the platform without an active admin key."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("No such API key.")
    if row.revoked_at is None:
        if row.role == Role.admin.value:
            _keep_an_admin(session, revoking=key_id)
        row.revoked_at = sa.func.now()
        session.flush()
        session.refresh(row)
    return row


def _keep_an_admin(session: Session, *, revoking: uuid.UUID) -> None:
    # Locking every active admin key (in one order) serializes concurrent revocations, so
    # two admins revoking each other's keys cannot both succeed.
    active = session.scalars(
        sa.select(ApiKey.id)
        .where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
        .with_for_update()
    ).all()
    if not any(key_id != revoking for key_id in active):
        raise LastAdminKey()


def has_admin(session: Session) -> bool:
    query = sa.select(ApiKey.id).where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None))
    return session.scalar(query.limit(1)) is not None
