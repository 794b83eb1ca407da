"""What every CLI command that talks to the HTTP API shares: where the API is, the caller's
key (and Idempotency-Key), and a one-line rendering of a problem+json answer."""

from __future__ import annotations

import argparse

import httpx

from core.settings import Settings


class UsageError(Exception):
    """The command line cannot be turned into a request; the message says why."""


def api_url(args: argparse.Namespace, settings: Settings) -> str:
    return (args.api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")


def open_client(args: argparse.Namespace, settings: Settings, *, timeout: float) -> httpx.Client:
    """An httpx client for the API, authenticated with ``--api-key``."""
    if not args.api_key:
        raise UsageError("an API key is needed (--api-key or CONVEYOR_API_KEY)")
    headers = {"Authorization": f"Bearer {args.api_key}"}
    if getattr(args, "idempotency_key", None):
        headers["Idempotency-Key"] = args.idempotency_key
    return httpx.Client(base_url=api_url(args, settings), headers=headers, timeout=timeout)


def problem_text(response: httpx.Response) -> str:
    """``code: message`` of a problem+json answer, or the status and the start of the body."""
    try:
        body = response.json()
        return f"{body.get('code', response.status_code)}: {body.get('message', response.text)}"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
