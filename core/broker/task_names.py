"""The contract between publisher (API, relay) and workers: job kind -> task name and queue."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUEUE = "default"
IMPORTS_QUEUE = "imports"
DEPLOYMENTS_QUEUE = "deployments"
QUEUES = (DEFAULT_QUEUE, IMPORTS_QUEUE, DEPLOYMENTS_QUEUE)


@dataclass(frozen=True)
class Route:
    task: str
    queue: str


JOB_ROUTES: dict[str, Route] = {
    "noop": Route("conveyor.jobs.noop", DEFAULT_QUEUE),
    "sleep": Route("conveyor.jobs.sleep", DEFAULT_QUEUE),
    "import": Route("conveyor.jobs.import", IMPORTS_QUEUE),
    "deployment": Route("conveyor.jobs.deployment", DEPLOYMENTS_QUEUE),
}

# Kinds a client may submit through POST /v1/jobs (imports have their own endpoint).
GENERIC_KINDS = ("noop", "sleep")


def route_for(kind: str) -> Route:
    return JOB_ROUTES[kind]


def celery_routes() -> dict[str, dict[str, str]]:
    routes = {route.task: {"queue": route.queue} for route in JOB_ROUTES.values()}
    return routes
