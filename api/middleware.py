"""Request context: a request id on every request (accepted from X-Request-ID or generated),
bound into structlog's contextvars so every log line of the request carries it, echoed on the
response, and one access-log line per request.

Pure ASGI rather than ``BaseHTTPMiddleware``: it does not buffer or re-wrap the response, and
contextvars set here are visible to the endpoint (including sync endpoints in the threadpool,
which run in a copy of this context).
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from opentelemetry import trace
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
# Client-supplied ids end up in logs and in job rows: accept only short, boring tokens.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

log = structlog.get_logger("conveyor.access")


def accepted_request_id(raw: str | None) -> str:
    """The client's request id if it is sane, else a fresh one."""
    if raw is not None and _SANE_REQUEST_ID.fullmatch(raw):
        return raw
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        raw_id = request_id.encode("latin-1")
        # scope["state"] backs ``request.state``; the error handlers read the id from there
        # because the 500 handler runs outside this middleware, after the context is cleared.
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:  # tracing is on: this request's trace (a submit's = its job's)
            structlog.contextvars.bind_contextvars(trace_id=format(span_context.trace_id, "032x"))
        status_code = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                # Raw pairs: replace any X-Request-ID, in one pass over the headers.
                message["headers"] = [
                    *(pair for pair in message.get("headers", ()) if pair[0].lower() != _HEADER),
                    (_HEADER, raw_id),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()
