"""A Python client for /v1/jobs, and ``conveyor submit`` built on it.

``JobsClient.submit_many`` sends submissions through ``POST /v1/jobs/batch`` in chunks of
1,000 (one transaction and one pipelined publish per chunk) and returns one item per
submission, in order: ``{"status", "job", "problem"}``. ``conveyor submit`` always uses it,
whether it sends one job or a million from a JSON-lines file.

    from cli.jobs_client import JobsClient
    with JobsClient("http://127.0.0.1:8000", api_key) as client:
        items = client.submit_many([{"kind": "noop"}] * 5000)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TextIO

import httpx

from cli import api_access
from core.settings import Settings

BATCH_LIMIT = 1000  # what POST /v1/jobs/batch accepts


class ApiError(Exception):
    """The API refused a whole request (not one entry of a batch)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(api_access.problem(response))
        self.status_code = response.status_code


class JobsClient:
    def __init__(self, api_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _checked(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ApiError(response)
        body: dict[str, Any] = response.json()
        return body

    def submit(
        self, kind: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """One job through POST /v1/jobs (the job; ApiError for a refused request)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"kind": kind, "params": params or {}}
        return self._checked(self._http.post("/v1/jobs", json=body, headers=headers))

    def submit_many(self, submissions: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Each submission ``{"kind", "params"?, "idempotency_key"?}`` through the batch
        endpoint, 1,000 per request; yields one item per submission, in order."""
        iterator = iter(submissions)
        while chunk := list(islice(iterator, BATCH_LIMIT)):
            answer = self._checked(self._http.post("/v1/jobs/batch", json={"jobs": chunk}))
            yield from answer["items"]

    def get(self, job_id: str) -> dict[str, Any]:
        return self._checked(self._http.get(f"/v1/jobs/{job_id}"))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "submit",
        help="submit jobs through the API (in batches of 1,000)",
        description="Submit jobs of one kind (--count copies), or one JSON object per line "
        "from --file ('-' for stdin), through POST /v1/jobs/batch. Prints one line per job: "
        "its id, or the problem that refused it. The API URL and key come from "
        "--api-url/--api-key or CONVEYOR_API_URL/CONVEYOR_API_KEY.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--kind", help="job kind, e.g. noop or sleep")
    what.add_argument("--file", help="JSON lines: {kind, params?, idempotency_key?} per line")
    parser.add_argument("--params", default="{}", help="a JSON object (with --kind)")
    parser.add_argument("--count", type=int, default=1, help="how many (with --kind)")
    parser.add_argument("--idempotency-key", help="with --kind and --count 1")
    api_access.add_api_options(parser)
    parser.set_defaults(handler=cmd_submit)


def _submissions(args: argparse.Namespace, stdin: TextIO) -> Iterator[dict[str, Any]]:
    if args.file:
        lines = stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as error:
                        raise SystemExit(f"{args.file}:{number}: not JSON: {error}") from None
        return
    try:
        params = json.loads(args.params)
    except ValueError as error:
        raise SystemExit(f"conveyor submit: --params is not JSON: {error}") from None
    entry: dict[str, Any] = {"kind": args.kind, "params": params}
    if args.idempotency_key:
        entry["idempotency_key"] = args.idempotency_key
    for _ in range(args.count):
        yield entry


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every job was accepted, 1 when some entry was refused, 2 when the API
    refused the request itself."""
    if not args.api_key:
        print("conveyor submit: --api-key or CONVEYOR_API_KEY is required", file=sys.stderr)
        return 2
    api_url = api_access.api_url(args, settings)
    api_access.quiet_request_log()
    if args.kind and args.idempotency_key and args.count != 1:
        print("conveyor submit: --idempotency-key needs --count 1", file=sys.stderr)
        return 2
    refused = 0
    with JobsClient(api_url, args.api_key) as client:
        try:
            for item in client.submit_many(_submissions(args, sys.stdin)):
                if item["problem"] is None:
                    print(f"{item['status']} {item['job']['id']}")
                else:
                    refused += 1
                    problem = item["problem"]
                    print(f"{item['status']} {problem['code']}: {problem['message']}")
        except ApiError as error:
            print(f"conveyor submit: {error}", file=sys.stderr)
            return 2
        except httpx.HTTPError as error:
            print(f"conveyor submit: cannot talk to the API at {api_url}: {error}", file=sys.stderr)
            return 2
    return 1 if refused else 0
