"""What a failed job tells its caller: a code and a sentence, never the exception's text."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from core.lifecycle.heartbeat import StopSignal
from core.lifecycle.states import JobStatus
from jobs.job_runner import INTERNAL_ERROR, _run_body


def test_a_crashing_body_shows_a_code_and_a_sentence_not_the_exception():
    def body(_: Any) -> None:
        raise RuntimeError('postgresql://app:pw9@db: SELECT * FROM "secret_table"')

    ctx = SimpleNamespace(result={"done": 3}, stop=StopSignal(), stop_reason=None)
    outcome = _run_body(ctx, body)  # type: ignore[arg-type]

    assert outcome is not None
    status, result, code, message = outcome
    assert (status, result, code) == (JobStatus.failed, {"done": 3}, INTERNAL_ERROR)
    assert message is not None
    for detail in ("RuntimeError", "pw9", "SELECT", "secret_table"):
        assert detail not in message
