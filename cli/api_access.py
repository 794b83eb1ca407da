"""Talking to the HTTP API from the command line (``conveyor import``, ``deploy``,
``schedules``, ``queues``): the URL and key options, one client, and refusals printed as
``code: message``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import httpx

from core.settings import Settings


class UsageError(Exception):
    """The command line cannot be turned into a request; the message says why."""


class ApiRefused(Exception):
    """The API answered 4xx/5xx; the message is its problem's code and message."""


def add_api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default=os.environ.get("CONVEYOR_API_URL"))
    parser.add_argument("--api-key", default=os.environ.get("CONVEYOR_API_KEY"))


def problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        where = f" ({body['where']})" if body.get("where") else ""
        return f"{body.get('code', response.status_code)}: {body.get('message')}{where}"
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def api_url(args: argparse.Namespace, settings: Settings) -> str:
    return (args.api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")


def quiet_request_log() -> None:
    """httpx logs every request at INFO: noise on a terminal, which shows the answers."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def open_client(args: argparse.Namespace, settings: Settings, *, timeout: float) -> httpx.Client:
    """An httpx client for the API, authenticated with ``--api-key`` (and sending
    ``--idempotency-key`` where the command has one)."""
    if not args.api_key:
        raise UsageError("an API key is needed (--api-key or CONVEYOR_API_KEY)")
    quiet_request_log()
    headers = {"Authorization": f"Bearer {args.api_key}"}
    if getattr(args, "idempotency_key", None):
        headers["Idempotency-Key"] = args.idempotency_key
    return httpx.Client(base_url=api_url(args, settings), headers=headers, timeout=timeout)


class Api:
    """Calls that either answer JSON or raise ApiRefused (schedules, queues)."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.url = api_url(args, settings)
        self.client = open_client(args, settings, timeout=30.0)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise ApiRefused(f"cannot talk to the API at {self.url}: {error}") from error
        if response.status_code >= 400:
            raise ApiRefused(problem(response))
        return response.json() if response.content else None

    def close(self) -> None:
        self.client.close()


def run(args: argparse.Namespace, settings: Settings, action: Any) -> int:
    """Run ``action(api)``; a refusal prints ``conveyor: code: message`` and exits 2."""
    try:
        api = Api(args, settings)
    except UsageError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        return 2
    try:
        action(api)
    except ApiRefused as error:
        print(f"conveyor: {error}", file=sys.stderr)
        return 2
    finally:
        api.close()
    return 0
