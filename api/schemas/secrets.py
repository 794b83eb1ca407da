"""Shapes of /v1/secrets. A secret's value is accepted, never returned."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.secrets.vault import SecretInfo


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    value: str | dict[str, Any] = Field(
        description="The secret: a string (a token, a private key) or a JSON object of "
        "variables for secrets_ref (stored as its JSON text)."
    )

    def as_text(self) -> str:
        return self.value if isinstance(self.value, str) else json.dumps(self.value)


class SecretOut(BaseModel):
    name: str
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: SecretInfo) -> SecretOut:
        return cls(
            name=info.name,
            version=info.version,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class SecretList(BaseModel):
    items: list[SecretOut]
