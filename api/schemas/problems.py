"""The problem+json body every error answers with, for the OpenAPI document. The bodies
themselves are built in ``api/error_handlers.py``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    field: str = Field(examples=["body.params.seconds"])
    message: str
    type: str


class Problem(BaseModel):
    type: str = Field(examples=["https://conveyor.dev/problems/not_found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    code: str = Field(description="Stable, machine-readable error code.", examples=["not_found"])
    message: str
    detail: str = Field(description="Same as message (RFC 9457 name).")
    where: dict[str, Any] | None = Field(
        description="What the error is about, e.g. {'field': 'body.kind'}."
    )
    request_id: str | None
    errors: list[FieldError] | None = Field(
        default=None, description="Every validation error (422 invalid_request only)."
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring problem+json bodies for these statuses."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
