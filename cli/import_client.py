"""``conveyor import FILE --importer NAME [--dry-run] [--wait]``: a client of the HTTP API.

The file is streamed to POST /v1/imports (httpx sends it in chunks, never whole in memory).
With ``--wait`` the job is polled and a progress line shows rows, rate and ETA; at the end
the counts are printed with where to download the rejected rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from cli import api_access
from core.settings import Settings

TERMINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.5
BAR_WIDTH = 24


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "import",
        help="upload a CSV through the API (--wait: follow it to the end)",
        description="Upload a CSV to POST /v1/imports. The API URL and key come from "
        "--api-url/--api-key or CONVEYOR_API_URL/CONVEYOR_API_KEY.",
    )
    parser.add_argument("file", type=Path, help="the CSV file")
    parser.add_argument("--importer", required=True, help="importer name, e.g. products")
    parser.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    parser.add_argument("--mode", choices=("upsert", "insert"), default="upsert")
    parser.add_argument("--error-threshold", help="max rejected rows (100) or fraction (5%%)")
    parser.add_argument("--delimiter", help="one character (default: sniffed)")
    parser.add_argument("--encoding", help="file encoding (default: UTF-8)")
    parser.add_argument("--idempotency-key", help="resubmitting with the same key is safe")
    parser.add_argument("--wait", action="store_true", help="show progress until it ends")
    parser.add_argument("--api-url", default=os.environ.get("CONVEYOR_API_URL"))
    parser.add_argument("--api-key", default=os.environ.get("CONVEYOR_API_KEY"))
    parser.set_defaults(handler=cmd_import)


def _form(args: argparse.Namespace) -> dict[str, str]:
    form = {"importer": args.importer, "mode": args.mode, "dry_run": str(args.dry_run).lower()}
    for name in ("error_threshold", "delimiter", "encoding"):
        if getattr(args, name) is not None:
            form[name] = getattr(args, name)
    return form


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if not args.file.is_file():
        print(f"conveyor: no such file: {args.file}", file=sys.stderr)
        return 2
    url = api_access.api_url(args, settings)
    try:
        with api_access.open_client(args, settings, timeout=60.0) as client:
            return _run(client, args, url)
    except api_access.UsageError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"conveyor: cannot talk to the API at {url}: {error}", file=sys.stderr)
        return 1


def _run(client: httpx.Client, args: argparse.Namespace, api_url: str) -> int:
    with args.file.open("rb") as file:
        files = {"file": (args.file.name, file, "text/csv")}
        response = client.post("/v1/imports", data=_form(args), files=files)
    if response.status_code >= 400:
        print(f"conveyor: import refused: {api_access.problem(response)}", file=sys.stderr)
        return 1
    job: dict[str, Any] = response.json()
    print(f"Import job {job['id']} submitted ({args.file.stat().st_size:,} bytes).")
    if not args.wait:
        print(f"Follow it: {api_url}/v1/jobs/{job['id']}")
        return 0
    job = follow(client, job["id"], out=sys.stderr)
    print(summary(job, api_url))
    return 0 if job["status"] == "succeeded" else 1


def follow(client: httpx.Client, job_id: str, *, out: TextIO) -> dict[str, Any]:
    """Poll the job until it ends, keeping one progress line up to date."""
    meter = RateMeter()
    interactive = out.isatty()
    last_print = 0.0
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        now = time.monotonic()
        line = progress_line(job, meter.update(job["progress"]["done"], now))
        if interactive:
            out.write("\r" + line.ljust(100))
        elif now - last_print >= 5 or job["status"] in TERMINAL:
            out.write(line + "\n")
            last_print = now
        out.flush()
        if job["status"] in TERMINAL:
            if interactive:
                out.write("\n")
            return job
        time.sleep(POLL_SECONDS)


class RateMeter:
    """Rows per second since the first progress seen (the upload and queueing excluded)."""

    def __init__(self) -> None:
        self._start: tuple[int, float] | None = None

    def update(self, done: int, now: float) -> float | None:
        if self._start is None:
            self._start = (done, now)
            return None
        rows, since = self._start
        elapsed = now - since
        return (done - rows) / elapsed if elapsed > 0 and done > rows else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(job: dict[str, Any], rate: float | None) -> str:
    progress = job["progress"]
    done, total, failed = progress["done"], progress["total"], progress["failed"]
    share = min(done / total, 1.0) if total else (1.0 if job["status"] == "succeeded" else 0.0)
    filled = int(share * BAR_WIDTH)
    parts = [
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share * 100:5.1f}%",
        f"{done:,}/{total:,} rows" if total else f"{done:,} rows",
        job["status"],
    ]
    if rate:
        parts.append(f"{rate:,.0f} rows/s")
        if total and total > done and job["status"] == "running":
            parts.append(f"ETA {_duration((total - done) / rate)}")
    if failed:
        parts.append(f"{failed:,} rejected")
    return "  ".join(parts)


def summary(job: dict[str, Any], api_url: str) -> str:
    result = job.get("result") or {}
    lines = [f"Import {job['status']}."]
    if job.get("error"):
        lines.append(f"Error {job['error']['code']}: {job['error']['message']}")
    if result:
        label = " (dry run: nothing written)" if result.get("dry_run") else ""
        lines.append(
            f"Rows: {result.get('rows_total', 0):,} total, {result.get('inserted', 0):,} "
            f"inserted, {result.get('updated', 0):,} updated "
            f"({result.get('unchanged', 0):,} unchanged), "
            f"{result.get('rejected', 0):,} rejected{label}."
        )
    if result.get("rejected"):
        base = f"{api_url}/v1/jobs/{job['id']}/errors"
        lines.append(f"Rejected rows: {base}?format=csv (CSV) or {base} (JSON).")
    return "\n".join(lines)
