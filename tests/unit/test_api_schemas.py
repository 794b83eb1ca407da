"""Pure checks of the API's schemas and request-id rules (no services)."""

from __future__ import annotations

from typing import get_args

import pytest
from fastapi.exceptions import RequestValidationError

from api.error_handlers import http_status_for, validation_problem
from api.middleware import accepted_request_id
from api.schemas.jobs import JobKind, JobSubmission, _percent
from core import errors
from core.broker.task_names import GENERIC_KINDS
from core.diagnostics import PARAMS_MODELS
from core.lifecycle.states import JobStatus


def test_every_generic_kind_has_a_params_model() -> None:
    assert set(get_args(JobKind)) == set(GENERIC_KINDS) == set(PARAMS_MODELS)


def test_params_errors_are_located_under_body_params() -> None:
    submission = JobSubmission(kind="sleep", params={"seconds": -1})
    with pytest.raises(RequestValidationError) as raised:
        submission.validated_params()
    assert raised.value.errors()[0]["loc"] == ("body", "params", "seconds")


def test_validation_problem_locates_fields_in_the_request_or_the_batch() -> None:
    errors = [
        {"loc": ("body", "params", "body"), "msg": "bad", "type": "int_parsing"},
        {"loc": ("kind",), "msg": "missing", "type": "missing"},
    ]

    request = validation_problem(errors)
    entry = validation_problem(errors, under=("jobs", 3))

    assert (request.message, request.where) == (
        "body.params.body: bad",
        {"field": "body.params.body"},
    )
    # Only the request-level "body" is replaced: a parameter named "body" stays.
    assert [e.field for e in entry.errors] == ["jobs.3.params.body", "jobs.3.kind"]
    assert (entry.message, entry.where) == (
        "jobs.3.params.body: bad",
        {"field": "jobs.3.params.body"},
    )
    assert [e.type for e in entry.errors] == ["int_parsing", "missing"]
    assert validation_problem([]).message == "Invalid request."
    assert validation_problem([]).where is None


@pytest.mark.parametrize(
    ("status", "done", "total", "percent"),
    [
        (JobStatus.running, 1, 3, 33.3),
        (JobStatus.running, 5, 4, 100.0),
        (JobStatus.queued, 0, None, 0.0),
        (JobStatus.running, 7, 0, 0.0),
        (JobStatus.succeeded, 0, None, 100.0),
    ],
)
def test_percent(status: JobStatus, done: int, total: int | None, percent: float) -> None:
    assert _percent(status, done=done, total=total) == percent


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.NotFound(), 404),
        (errors.IdempotencyConflict(), 409),
        (errors.InvalidTransition(), 409),
        (errors.InvalidRequest(), 422),
        (errors.PayloadTooLarge(), 413),
        (errors.Unauthenticated(), 401),
        (errors.Forbidden(), 403),
        (errors.DatabaseUnavailable(), 503),
        (errors.BrokerUnavailable(), 503),
        (errors.LeaseLost(), 500),
        (errors.ConveyorError(), 500),
    ],
)
def test_error_statuses(error: errors.ConveyorError, status: int) -> None:
    assert http_status_for(error) == status


def test_request_ids() -> None:
    assert accepted_request_id("abc-1.2_3") == "abc-1.2_3"
    assert accepted_request_id("x" * 128) == "x" * 128
    for insane in [None, "", "x" * 129, "a b", "a\nb", "é"]:
        generated = accepted_request_id(insane)
        assert generated != insane
        assert len(generated) == 32
