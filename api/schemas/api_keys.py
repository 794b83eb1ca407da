"""Shapes of /v1/api-keys. Hashes never leave the server; the plain key is shown once."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.api_keys import Role
from core.models import ApiKey


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyOut:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    key: str = Field(description="The plain key. Shown only in this response; store it now.")
