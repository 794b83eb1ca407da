"""``conveyor deploy``: submit a deployment through the HTTP API and, with ``--follow``, stream
its log (Server-Sent Events, resumed with Last-Event-ID after a dropped connection) and exit
with its outcome: 0 succeeded, 1 failed or cancelled, 2 a refused request.

Targets are ``[NAME=][USER@]HOST[:PORT]``, e.g. ``web1=deploy@10.0.0.5:22`` (name defaults to
the host, user to root, port to 22; IPv6 hosts in brackets).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from cli import api_access
from cli.api_access import UsageError, problem
from core.settings import Settings

TARGET = re.compile(
    r"^(?:(?P<name>[^=@]+)=)?(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$"
)
RECONNECTS = 30


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "deploy",
        help="run an Ansible playbook through the API (--follow: stream its log)",
        description="Submit POST /v1/deployments. The API URL and key come from "
        "--api-url/--api-key or CONVEYOR_API_URL/CONVEYOR_API_KEY.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", help="a project directory under CONVEYOR_PROJECTS_DIR")
    source.add_argument("--git", metavar="URL", help="a git repository (https://, file://)")
    parser.add_argument("--ref", help="git branch, tag or commit")
    parser.add_argument("--playbook", required=True, help="path inside the source")
    parser.add_argument(
        "--target", action="append", required=True, help="[NAME=][USER@]HOST[:PORT], repeatable"
    )
    parser.add_argument("-e", "--extra-var", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--extra-vars-json", help="a JSON object of extra variables")
    parser.add_argument("--ssh-key-ref", help="secret holding the SSH private key")
    parser.add_argument("--secrets-ref", help="secret holding a JSON object of variables")
    parser.add_argument("--github-token-ref", help="secret holding the git token")
    parser.add_argument("--timeout", type=int, help="wall-clock limit, seconds")
    parser.add_argument("--memory-mb", type=int, help="memory limit of Ansible's processes")
    parser.add_argument("--cpu-seconds", type=int, help="CPU limit of Ansible's processes")
    parser.add_argument("--max-attempts", type=int, help="runs in all when a host is unreachable")
    parser.add_argument("--backoff", type=float, help="first pause between runs, seconds")
    parser.add_argument("--retry-failed-tasks", action="store_true", help="retry failed tasks too")
    parser.add_argument("--idempotency-key", help="resubmitting with the same key is safe")
    parser.add_argument("--follow", action="store_true", help="stream the log until it ends")
    parser.add_argument("--api-url", default=os.environ.get("CONVEYOR_API_URL"))
    parser.add_argument("--api-key", default=os.environ.get("CONVEYOR_API_KEY"))
    parser.set_defaults(handler=cmd_deploy)


def parse_target(text: str) -> dict[str, Any]:
    match = TARGET.match(text.strip())
    if match is None:
        raise UsageError(f"--target {text!r}: expected [NAME=][USER@]HOST[:PORT]")
    host = match["host"]
    default_name = re.sub(r"[^A-Za-z0-9_.-]", "_", host.strip("[]"))
    target: dict[str, Any] = {"name": match["name"] or default_name, "host": host}
    if match["user"]:
        target["user"] = match["user"]
    if match["port"]:
        target["port"] = int(match["port"])
    return target


def _extra_vars(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args.extra_vars_json:
        try:
            extra = json.loads(args.extra_vars_json)
        except ValueError as error:
            raise UsageError(f"--extra-vars-json is not JSON: {error}") from None
        if not isinstance(extra, dict):
            raise UsageError("--extra-vars-json must be a JSON object")
    for item in args.extra_var:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-e {item!r}: expected KEY=VALUE")
        extra[key] = value
    return extra


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    if args.project:
        source: dict[str, Any] = {"project": args.project}
    else:
        source = {"git": {"url": args.git, **({"ref": args.ref} if args.ref else {})}}
    body: dict[str, Any] = {
        "source": source,
        "playbook": args.playbook,
        "targets": [parse_target(text) for text in args.target],
        "extra_vars": _extra_vars(args),
    }
    for name in ("ssh_key_ref", "secrets_ref", "github_token_ref"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    limits = {
        "timeout_seconds": args.timeout,
        "memory_mb": args.memory_mb,
        "cpu_seconds": args.cpu_seconds,
    }
    body["limits"] = {key: value for key, value in limits.items() if value is not None}
    retry: dict[str, Any] = {"max_attempts": args.max_attempts, "backoff_seconds": args.backoff}
    body["retry"] = {key: value for key, value in retry.items() if value is not None}
    body["retry"]["retry_failed_tasks"] = args.retry_failed_tasks
    return body


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    url = api_access.api_url(args, settings)
    try:
        body = build_request(args)
        client = api_access.open_client(args, settings, timeout=30.0)
    except UsageError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            response = client.post("/v1/deployments", json=body)
            if response.status_code >= 400:
                print(f"conveyor: deployment refused: {problem(response)}", file=sys.stderr)
                return 2
            job: dict[str, Any] = response.json()
            print(f"Deployment job {job['id']} submitted.", flush=True)
            if not args.follow:
                print(f"Follow it: {url}/v1/jobs/{job['id']}/logs/stream")
                return 0
            return follow(client, job["id"])
    except httpx.HTTPError as error:
        print(f"conveyor: cannot talk to the API at {url}: {error}", file=sys.stderr)
        return 1


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) for each Server-Sent Event in ``lines``."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value


def _show(line: dict[str, Any]) -> None:
    text = line.get("line") or ""
    if line.get("event") == "conveyor":
        print(f"» {text}", flush=True)
    elif text:
        print(text, flush=True)


def follow(client: httpx.Client, job_id: str) -> int:
    """Print the job's log until it ends; reconnects resume after the last line seen."""
    last: str | None = None
    for _ in range(RECONNECTS):
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with client.stream(
                "GET", f"/v1/jobs/{job_id}/logs/stream", headers=headers, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    print(f"conveyor: cannot follow: {problem(response)}", file=sys.stderr)
                    return 1
                for event, data, event_id in sse_events(response.iter_lines()):
                    if event == "log":
                        _show(json.loads(data))
                        last = event_id or last
                    elif event == "end":
                        return _ended(json.loads(data))
        except httpx.TransportError:
            time.sleep(1)
    print("conveyor: lost the log stream; the job goes on.", file=sys.stderr)
    return 1


def _ended(end: dict[str, Any]) -> int:
    status = end.get("status")
    error = end.get("error")
    print(f"Deployment {status}." + (f" {error['code']}: {error['message']}" if error else ""))
    return 0 if status == "succeeded" else 1
