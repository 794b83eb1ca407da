"""OpenTelemetry tracing: one job is one trace, across the API and the workers.

Off by default, at no cost: nothing is instrumented and no span is recorded unless the
standard variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp|console``; and
never with ``OTEL_SDK_DISABLED=true``). The exporter reads the rest of the ``OTEL_*``
variables itself (headers, timeouts, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_*``...).

How a job's spans hang together: the submit request's span (FastAPI instrumentation) is the
trace's root; its context is stored on the job row (``traceparent``) and is the parent of
every publish of the job (direct, relay, reaper re-publish), which carries it on in the
message headers; the worker's task span (Celery instrumentation) is the child of that, and
the claim, each unit and the finish are its children. Without tracing, a job still gets a
random ``trace_id``, so its log lines correlate all the same.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("conveyor")

_configured = False


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or exporter in ("otlp", "console")


class _SkipStrayClientCalls(Sampler):
    """Root sampler: drop database and Redis calls made outside any trace (the recovery
    loop's polling, the broker consumer's BRPOP), keep everything else. Calls inside a
    traced request or job are children and follow their parent."""

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Mapping[str, Any] | None = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes)

    def get_description(self) -> str:
        return "SkipStrayClientCalls"


def configure(service_name: str) -> bool:
    """Set up the process's tracer provider and the Redis instrumentation once, if tracing
    is enabled; True when it is. Call in the process's entrypoint (before forking: the
    batch processor restarts its thread in forked children)."""
    global _configured
    if _configured or not enabled():
        return _configured
    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}),
        sampler=ParentBased(root=_SkipStrayClientCalls()),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    RedisInstrumentor().instrument()
    # Wraps create_engine: every engine made afterwards (core.db.make_engine) is traced.
    # 0.66b1 declares SQLAlchemy < 2.1; the engine events it listens to are unchanged in
    # 2.1 (tests/e2e/test_tracing.py checks the statement spans arrive).
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    _configured = True
    return True


def _exporter() -> Any:
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def is_configured() -> bool:
    return _configured


def new_job_trace() -> tuple[str, str | None]:
    """(trace_id, traceparent) for a job being created: the current span's trace when one is
    recording (the submit request), else a fresh random trace id and no parent."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return secrets.token_hex(16), None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return format(span_context.trace_id, "032x"), carrier.get("traceparent")


def job_context(traceparent: str | None) -> context.Context | None:
    """The stored context of a job, to parent its publishes on."""
    if traceparent is None:
        return None
    return propagate.extract({"traceparent": traceparent})


def inject(headers: dict[str, Any]) -> None:
    """Put the current trace context into message headers."""
    propagate.inject(headers)
