"""Talking to the HTTP API from the command line (``conveyor schedules``, ``conveyor
queues``): the URL and key options, one client, and refusals printed as ``code: message``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import httpx

from core.settings import Settings


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


class Api:
    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        # httpx logs every request at INFO: noise on a terminal, which shows the answers.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.url = (args.api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
        if not args.api_key:
            raise ApiRefused("an API key is needed (--api-key or CONVEYOR_API_KEY)")
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {args.api_key}"}, timeout=30.0
        )

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
    except ApiRefused as error:
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
