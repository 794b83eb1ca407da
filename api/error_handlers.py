"""The only place errors become HTTP: one table from the ``core.errors`` tree to statuses, and
every error answered as ``application/problem+json`` (RFC 9457) with Conveyor's stable ``code``.

Body: {"type", "title", "status", "code", "message", "detail", "where", "request_id"} (+ "errors"
for request validation). Unexpected exceptions answer a bare 500 ``internal_error``; the
traceback goes to the log, never to the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from api.schemas.problems import FieldError
from core.errors import (
    BadRequest,
    BrokerUnavailable,
    Conflict,
    ConveyorError,
    DatabaseUnavailable,
    DependencyUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://conveyor.dev/problems/"

log = structlog.get_logger(__name__)

# Looked up along the error's MRO, so a subclass inherits its parent's status unless listed.
HTTP_STATUS: Mapping[type[ConveyorError], int] = {
    NotFound: 404,
    IdempotencyConflict: 409,
    InvalidTransition: 409,
    Conflict: 409,
    BadRequest: 400,
    InvalidRequest: 422,
    PayloadTooLarge: 413,
    Unauthenticated: 401,
    RateLimited: 429,
    Forbidden: 403,
    DatabaseUnavailable: 503,
    BrokerUnavailable: 503,
    DependencyUnavailable: 503,
}
EXTRA_HEADERS: Mapping[type[ConveyorError], Mapping[str, str]] = {
    Unauthenticated: {"WWW-Authenticate": 'Bearer realm="conveyor"'},
}

# Driver-level connection errors that escaped ``db.transaction`` (e.g. raised while a
# dependency opened its own connection) are still "database unavailable", not a 500.
_DATABASE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def http_status_for(error: ConveyorError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def _headers_for(error: ConveyorError) -> dict[str, str]:
    headers: dict[str, str] = {}
    for cls in reversed(type(error).__mro__):
        headers.update(EXTRA_HEADERS.get(cls, {}))
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return headers


def _request_id(request: Request) -> str | None:
    request_id = getattr(request.state, "request_id", None)
    return str(request_id) if request_id is not None else None


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    message: str,
    where: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "message": message,
        "detail": message,
        "where": dict(where) if where is not None else None,
        "request_id": _request_id(request),
        **(extra or {}),
    }
    all_headers = dict(headers or {})
    # The 500 handler runs outside the request-id middleware, so set the header here too.
    if body["request_id"] is not None:
        all_headers["X-Request-ID"] = body["request_id"]
    return JSONResponse(
        body, status_code=status, headers=all_headers, media_type=PROBLEM_MEDIA_TYPE
    )


def conveyor_problem(request: Request, error: ConveyorError) -> JSONResponse:
    """The problem+json response for one of our errors (also used by the ASGI guards, which
    answer before FastAPI's exception handling)."""
    return problem_response(
        request,
        status=http_status_for(error),
        code=error.code,
        message=error.message,
        where=error.where,
        headers=_headers_for(error),
    )


async def _conveyor_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ConveyorError)  # registered for ConveyorError only
    status = http_status_for(error)
    if status >= 500:
        # An outage is expected to happen and is reported by probes; anything else is a bug.
        report = log.warning if isinstance(error, DependencyUnavailable) else log.error
        report("http.conveyor_error", code=error.code, message=error.message)
    return conveyor_problem(request, error)


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """A 422 ``invalid_request`` from pydantic errors: the first error says it, all are listed."""

    message: str
    where: dict[str, Any] | None
    errors: list[FieldError]


def _field(loc: Sequence[Any], under: Sequence[str | int]) -> str:
    # An entry of a batch is validated on its own, as if it were the body: its "body" is
    # replaced by where the entry sits (jobs.3).
    if under and loc[:1] == ("body",):
        loc = loc[1:]
    return ".".join(str(part) for part in (*under, *loc))


def validation_problem(
    errors: Sequence[Mapping[str, Any]], *, under: Sequence[str | int] = ()
) -> ValidationProblem:
    """Field paths from pydantic's ``loc`` (``body.params.seconds``, or ``jobs.3.params.seconds``
    with ``under=("jobs", 3)``). Only field, message and type: pydantic's "input" and "ctx"
    may echo large or secret input."""
    fields = [
        FieldError(
            field=_field(tuple(item.get("loc", ())), under),
            message=item.get("msg", ""),
            type=item.get("type", "value_error"),
        )
        for item in errors
    ]
    first = fields[0] if fields else FieldError(field="", message="Invalid request.", type="")
    return ValidationProblem(
        message=f"{first.field}: {first.message}" if first.field else first.message,
        where={"field": first.field} if first.field else None,
        errors=fields,
    )


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problem = validation_problem(error.errors())
    return problem_response(
        request,
        status=422,
        code=InvalidRequest.code,
        message=problem.message,
        where=problem.where,
        extra={"errors": [field.model_dump() for field in problem.errors]},
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: PayloadTooLarge.code}


async def _http_exception(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    status = error.status_code
    code = _HTTP_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    if status == 404:
        message = f"No such endpoint: {request.method} {request.url.path}"
    else:
        message = str(error.detail)
    return problem_response(
        request, status=status, code=code, message=message, headers=error.headers
    )


async def _database_error(request: Request, error: Exception) -> JSONResponse:
    log.warning("http.database_error", error=f"{type(error).__name__}: {error}"[:300])
    unavailable = DatabaseUnavailable()
    return problem_response(request, status=503, code=unavailable.code, message=unavailable.message)


async def _data_error(request: Request, error: Exception) -> JSONResponse:
    # PostgreSQL refused a value that came with the request (a NUL character in a text
    # field, a number out of range...): the request's fault, said without the driver's text.
    log.warning("http.data_error", error=f"{type(error).__name__}: {error}"[:300])
    invalid = InvalidRequest("A value in the request cannot be stored (e.g. a NUL character).")
    return problem_response(request, status=422, code=invalid.code, message=invalid.message)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error(
        "http.unhandled_error",
        request_id=_request_id(request),
        method=request.method,
        path=request.url.path,
        exc_info=error,
    )
    return problem_response(
        request, status=500, code="internal_error", message="Internal server error."
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_exception)
    for error_type in _DATABASE_ERRORS:
        app.add_exception_handler(error_type, _database_error)
    app.add_exception_handler(sa_exc.DataError, _data_error)
    app.add_exception_handler(psycopg.DataError, _data_error)  # the async hot path
    # Exception is handled by Starlette's outermost ServerErrorMiddleware, which still
    # re-raises afterwards so the server logs it; the client only sees the problem body.
    app.add_exception_handler(Exception, _unexpected_error)
