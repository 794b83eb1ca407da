"""One logging setup for structlog and stdlib records: JSON or console, context from
contextvars (request_id, job_id), secrets redacted.

Redaction is the last step before rendering, after exceptions were rendered into text, so
it sees every string a line will contain: nested values, messages of stdlib loggers
(uvicorn, Celery, kombu), exception text and tracebacks (core.secrets.redact).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from core.secrets.redact import Redactor
from core.settings import Settings

# Loggers that come with handlers of their own; their lines go through ours instead.
_FOREIGN_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "celery",
    "kombu",
    "flower",
    "tornado.access",
    "tornado.application",
    "tornado.general",
)

_redactor = Redactor()


class RedactingProcessor:
    """A structlog processor masking secrets anywhere in the event (see core.secrets.redact)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        return self.redactor.mapping(event)


def mask_in_logs(*values: str) -> None:
    """Never show these values in this process's logs (e.g. secrets resolved at run time)."""
    _redactor.add(*values, min_chars=1)


def configure_logging(settings: Settings) -> None:
    _redactor.add(*settings.secret_values())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter_by_level first: a line below the level costs a level check, not the
        # processors (the access log runs on every request).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            RedactingProcessor(_redactor),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    # Warnings (Celery's "running as root", deprecations) become log records too.
    logging.captureWarnings(True)


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
