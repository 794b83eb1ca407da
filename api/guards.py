"""ASGI guards in front of the app: what must hold before any route, dependency or
authentication runs.

- ``BodyLimitMiddleware``: request bodies are capped before anything reads them. A
  ``Content-Length`` over the cap is refused at once without reading a byte; a chunked body
  is counted as the app reads it and refused at the first byte past the cap. FastAPI reads
  a JSON body *before* it resolves dependencies (authentication among them), so without
  this any client could make the API buffer gigabytes.
- ``TrustedHostMiddleware``: only the configured Host headers (DNS rebinding, poisoned
  absolute URLs).
- ``ProblemCORSMiddleware``: Starlette's CORS with refusals as problem+json.
- ``SecurityHeadersMiddleware``: nosniff, no referrer, no framing, no caching, and a
  Content-Security-Policy that allows nothing unless the response set its own (the docs
  page does).

Pure ASGI (no ``BaseHTTPMiddleware``): nothing is buffered or re-wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_handlers import conveyor_problem
from core.errors import BadRequest, ConveyorError, PayloadTooLarge

# Slack over the upload cap for a multipart form's boundaries and small fields; the upload
# route enforces the cap on the file itself with a precise message.
MULTIPART_SLACK_BYTES = 1 << 20

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Answers carry job data and, once, a new API key: no shared or browser cache keeps them.
    "Cache-Control": "no-store",
}
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_RAW_SECURITY_HEADERS = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in {**SECURITY_HEADERS, "Content-Security-Policy": DEFAULT_CSP}.items()
)


async def _answer(scope: Scope, receive: Receive, send: Send, error: ConveyorError) -> None:
    response = conveyor_problem(Request(scope), error)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions met while reading a body
    (any other error would become a 400), so the app's handlers answer 413 problem+json."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"The request body is larger than the maximum of {limit:,} bytes.",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit + MULTIPART_SLACK_BYTES

    def _limit(self, headers: Headers) -> int:
        content_type = headers.get("content-type", "").lower()
        multipart = content_type.startswith("multipart/form-data")
        return self.upload_limit if multipart else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self._limit(headers)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            message = f"The request body is larger than the maximum of {limit:,} bytes."
            await _answer(scope, receive, send, PayloadTooLarge(message))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def _hostname(raw: str) -> str:
    """The Host header without its port, IPv6 brackets kept off."""
    if raw.startswith("["):
        return raw[1:].partition("]")[0]
    return raw.rpartition(":")[0] if raw.count(":") == 1 else raw


class TrustedHostMiddleware:
    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _hostname(Headers(scope=scope).get("host", "")).lower()
        if _host_allowed(host, self.allowed_hosts):
            await self.app(scope, receive, send)
            return
        error = BadRequest("Invalid Host header.", where={"header": "Host"})
        await _answer(scope, receive, send, error)


class ProblemCORSMiddleware(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No origin configured and no Origin header: nothing to add or refuse, and no
        # response varies by origin; skip the per-response header rewrite (every request
        # of a non-browser client).
        if (
            scope["type"] == "http"
            and not self.allow_origins
            and not self.allow_all_origins
            and not any(name == b"origin" for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        message = bytes(response.body).decode(errors="replace") or "CORS preflight refused."
        scope: Scope = {"type": "http", "headers": [], "state": {}}
        problem = conveyor_problem(Request(scope), BadRequest(message))
        problem.headers.update(
            {k: v for k, v in response.headers.items() if k.startswith("access-control")}
        )
        return problem


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Raw header pairs, added unless the route set its own (the docs' CSP): one
                # pass over the response's headers instead of a search per header.
                raw = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                raw.extend(pair for pair in _RAW_SECURITY_HEADERS if pair[0] not in present)
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)


class GZipWhenAccepted:
    """Starlette's GZipMiddleware, entered only by requests that accept gzip: for the others
    it would still intercept every response to decide not to compress it."""

    def __init__(self, app: ASGIApp, *, minimum_size: int) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(
            name == b"accept-encoding" and b"gzip" in value for name, value in scope["headers"]
        ):
            await self.gzip(scope, receive, send)
            return
        await self.app(scope, receive, send)
