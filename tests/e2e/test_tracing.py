"""Tracing across real processes: the API and a worker export OTLP over HTTP to a receiver
started by the test. One job is one trace: the submit request, the publish, the worker's
task, its claim, each unit and the finish share the job's trace id (shown in the job
resource and in the worker's log lines), with the parent links of core/tracing.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from core.api_keys import Role
from tests import services
from tests.e2e.conftest import wait_for_job
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _by_name(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_one_job_is_one_trace_across_api_and_worker(
    platform: services.Platform, api_client: Any, receiver: OtlpReceiver
) -> None:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    platform.start_api(otel)
    worker = platform.start_worker(concurrency=1, extra_env=otel)
    client = api_client(Role.submitter)
    response = client.post(
        "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0.4, "steps": 2}}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    trace_id = job["trace_id"]
    assert len(trace_id) == 32
    done = wait_for_job(client, job["id"], {"succeeded", "failed"}, timeout=30)
    assert done["status"] == "succeeded"

    def complete() -> list[ReceivedSpan] | None:
        # Each process exports its spans in batches as they end: the task's span ends after
        # the finish's and may come in a later batch, the API's after the publish.
        spans = receiver.trace(trace_id)
        names = ("POST /v1/jobs", "publish conveyor.jobs.sleep", "job.finish", "run/")
        return spans if all(_by_name(spans, name) for name in names) else None

    spans = services.wait_until(complete, timeout=20, message="the job's spans")
    assert isinstance(spans, list)
    submit = _one(spans, "POST /v1/jobs")
    publish = _one(spans, "publish conveyor.jobs.sleep")
    run = _one(spans, "run/conveyor.jobs.sleep")
    claim = _one(spans, "job.claim")
    units = _by_name(spans, "job.unit")
    finish = _one(spans, "job.finish")
    assert {submit.service, publish.service} == {"conveyor-api"}
    assert {run.service, claim.service, finish.service} == {"conveyor-worker"}
    assert submit.parent_id is None  # the trace's root
    assert publish.parent_id == submit.span_id
    assert run.parent_id == publish.span_id  # across processes, through the message
    assert {claim.parent_id, finish.parent_id} == {run.span_id}
    assert len(units) == 3  # the start, then one per step
    assert {unit.parent_id for unit in units} == {run.span_id}
    # Statements (SQLAlchemy instrumentation) and Redis calls are children of these spans.
    by_id = {span.span_id: span for span in spans}
    # The claim and the finish are one statement each (a CTE: "WITH ...").
    statements = [s for s in spans if s.name.startswith(("SELECT", "UPDATE", "INSERT", "WITH"))]
    assert {by_id[s.parent_id or ""].name for s in statements} >= {
        "POST /v1/jobs",
        "job.claim",
        "job.unit",
        "job.finish",
    }
    assert "LPUSH" in {s.name for s in spans if s.parent_id == publish.span_id}

    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    about_the_job = [line for line in lines if line.get("job_id") == job["id"]]
    assert about_the_job
    assert {line.get("trace_id") for line in about_the_job} == {trace_id}


def test_without_tracing_a_job_still_has_a_trace_id_for_its_logs(
    platform: services.Platform, api_client: Any
) -> None:
    platform.start_api()
    worker = platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    job = client.post("/v1/jobs", json={"kind": "noop"}).json()
    assert len(job["trace_id"]) == 32
    assert wait_for_job(client, job["id"], {"succeeded"}, timeout=30)
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert {line.get("trace_id") for line in lines if line.get("job_id") == job["id"]} == {
        job["trace_id"]
    }
