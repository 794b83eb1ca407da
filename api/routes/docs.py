"""/docs: Swagger UI under a strict Content-Security-Policy.

FastAPI's page loads Swagger UI from a CDN and starts it with an inline script. Every
``<script>`` here carries a fresh nonce and the policy allows scripts by that nonce alone
('strict-dynamic' lets the bundle load what it needs), styles and images only from the CDN,
and fetches only from this origin (the OpenAPI document). ReDoc and the OAuth2 redirect page
(inline scripts, unused with bearer keys) are not served.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

ASSETS_ORIGIN = "https://cdn.jsdelivr.net"
FAVICON_ORIGIN = "https://fastapi.tiangolo.com"


def docs_csp(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'nonce-{nonce}' 'strict-dynamic'",
            f"style-src {ASSETS_ORIGIN}",
            f"img-src 'self' data: {FAVICON_ORIGIN} {ASSETS_ORIGIN}",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    page = get_swagger_ui_html(
        openapi_url=str(request.app.openapi_url), title=f"{request.app.title} - API docs"
    )
    html = bytes(page.body).decode().replace("<script", f'<script nonce="{nonce}"')
    return HTMLResponse(html, headers={"Content-Security-Policy": docs_csp(nonce)})
