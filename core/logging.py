"""One logging setup for structlog and stdlib records: JSON or console, context from
contextvars (request_id, job_id), secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from core.settings import Settings

REDACTED = "***"
_SECRET_WORDS = ("password", "secret", "token", "authorization", "api_key")


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Never let a value under a secret-looking key reach a log line."""
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def configure_logging(settings: Settings) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def bind_job_context(
    *,
    job_id: str,
    request_id: str | None,
    trace_id: str | None = None,
    attempt: int | None = None,
) -> None:
    structlog.contextvars.bind_contextvars(
        job_id=job_id, request_id=request_id, trace_id=trace_id, attempt=attempt
    )


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()
