"""/metrics: Prometheus exposition (counts only, no job data), values read at scrape time
(core.metrics).

On the API's port it answers only with ``Authorization: Bearer <CONVEYOR_METRICS_TOKEN>``
(failures count towards the client's authentication throttle) and not at all without a
token configured. ``CONVEYOR_METRICS_PORT`` serves it on a separate listener instead
(api.app; loopback by default), for a scraper on the same host or network namespace.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.deps import AppSettings, Throttle, check_secret
from api.schemas.problems import problem_responses
from core.errors import NotFound, Unauthenticated

router = APIRouter(tags=["health"])


def _presented_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@router.get(
    "/metrics",
    summary="Prometheus metrics (bearer CONVEYOR_METRICS_TOKEN)",
    response_class=Response,
    responses=problem_responses(401, 404, 429),
)
def metrics(request: Request, settings: AppSettings, throttle: Throttle) -> Response:
    if settings.metrics_token is None:
        raise NotFound("Metrics are not served on this port (see CONVEYOR_METRICS_TOKEN).")
    expected = settings.metrics_token.get_secret_value().encode()
    presented = _presented_token(request).encode()
    if not check_secret(request, throttle, lambda: hmac.compare_digest(presented, expected)):
        raise Unauthenticated("A valid metrics token is required (Authorization: Bearer).")
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
