"""Schemathesis over the API's own OpenAPI document, against the real server (uvicorn, real
PostgreSQL and Redis), with an admin key: every operation gets a bounded number of
generated requests, valid and invalid ones alike, from a fixed seed. Whatever comes in, the
API answers without a 5xx, and every error is problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode

from core import db
from core.api_keys import Role
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import import_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow(140)]

EXAMPLES_PER_OPERATION = 25
SEED = 20261125
PROBLEM_FIELDS = {"type", "title", "status", "code", "message", "detail", "where", "request_id"}


@pytest.fixture(scope="module")
def fuzzed_api(database_url, session_redis, engine, tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # Every request carries a valid key; a fuzzed header must not lock the fuzzer out.
    app_settings = import_settings(
        database_url, session_redis, tmp / "storage", auth_failure_limit=1_000_000
    )
    key = services.new_api_key(db.make_sessionmaker(engine), app_settings, Role.admin, "fuzz")
    (tmp / "logs").mkdir()
    with services.platform(settings_env(app_settings), tmp / "logs") as platform:
        platform.start_api()
        yield {"url": platform.api_url, "key": key}


def check_answer(case: Any, fuzzed_api: dict[str, Any]) -> None:
    headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzzed_api['key']}"}
    response = case.call(base_url=fuzzed_api["url"], headers=headers, timeout=30)

    described = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    assert response.status_code < 500, described
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])  # a list per header
        assert content_type == ["application/problem+json"], described
        body = response.json()
        assert set(body) >= PROBLEM_FIELDS, described
        assert body["status"] == response.status_code, described


def fuzz(operation: Any, mode: GenerationMode, fuzzed_api: dict[str, Any]) -> None:
    """Hypothesis over one operation's generated cases (shrinks to a minimal failure)."""

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        check_answer(case, fuzzed_api)

    run()


def test_any_request_gets_a_non_5xx_answer_and_errors_are_problems(
    fuzzed_api: dict[str, Any],
) -> None:
    document = httpx.get(f"{fuzzed_api['url']}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results)  # the document itself is valid
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 15  # the whole API, not an empty document

    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, fuzzed_api)
            except Unsatisfiable:  # nothing to get wrong (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except AssertionError as failure:
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    assert not failures, "\n".join(failures)
