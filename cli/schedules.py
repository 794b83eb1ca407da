"""``conveyor schedules create|list|get|update|pause|resume|delete|firings``, through the HTTP
API (CONVEYOR_API_URL, CONVEYOR_API_KEY; operator or admin). A schedule is named by its id
or its name."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from cli.api_access import Api, ApiRefused, add_api_options, run
from core.settings import Settings

_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, value


def _add_definition(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    timing = parser.add_mutually_exclusive_group(required=creating)
    timing.add_argument("--cron", help='five fields, e.g. "30 2 * * *" (in --timezone)')
    timing.add_argument("--every", type=float, metavar="SECONDS", help="an interval instead")
    parser.add_argument("--timezone", help="IANA name (default UTC)")
    parser.add_argument("--kind", choices=["noop", "sleep", "import", "deployment"])
    parser.add_argument("--params", type=_json_object, help="the job's params as JSON")
    parser.add_argument("--importer", help="import: the declared importer")
    parser.add_argument("--inbox-pattern", help="import: file names in CONVEYOR_IMPORT_INBOX")
    parser.add_argument(
        "--option", type=_option, action="append", help="import option KEY=VALUE (mode, …)"
    )
    parser.add_argument("--catch-up", choices=["skip", "latest", "all"])
    parser.add_argument("--overlap", choices=["skip", "allow"])
    parser.add_argument("--owner", help="API key id the jobs run as (admin only)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedules = sub.add_parser("schedules", help="periodic jobs (through the API)")
    commands = schedules.add_subparsers(dest="schedules_command", required=True)
    create = commands.add_parser("create", help="create a schedule")
    create.add_argument("name")
    _add_definition(create, creating=True)
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.set_defaults(handler=cmd_create)
    update = commands.add_parser("update", help="change the options given")
    update.add_argument("schedule", help="id or name")
    update.add_argument("--name", dest="new_name", help="rename")
    _add_definition(update, creating=False)
    update.set_defaults(handler=cmd_update)
    listing = commands.add_parser("list", help="every schedule, with its next fire time")
    listing.set_defaults(handler=cmd_list)
    for name, handler, text in (
        ("get", cmd_get, "one schedule, as JSON"),
        ("pause", cmd_pause, "stop firing (until resume)"),
        ("resume", cmd_resume, "fire again, counting from now"),
        ("delete", cmd_delete, "delete it and its firings (its jobs stay)"),
        ("firings", cmd_firings, "its firings, newest first, with their jobs"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("schedule", help="id or name")
        if name == "firings":
            command.add_argument("--limit", type=int, default=20)
        command.set_defaults(handler=handler)
    for command in commands.choices.values():
        add_api_options(command)


def _job(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.kind is None:
        if args.params or args.importer or args.inbox_pattern or args.option:
            raise ApiRefused("--params, --importer, --inbox-pattern, --option need --kind")
        return None
    job: dict[str, Any] = {"kind": args.kind}
    if args.params:
        job["params"] = args.params
    if args.importer:
        job["importer"] = args.importer
    if args.inbox_pattern:
        job["inbox_pattern"] = args.inbox_pattern
    if args.option:
        job["options"] = dict(args.option)
    return job


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.cron is not None:
        body["cron"] = args.cron
    if args.every is not None:
        body["interval_seconds"] = args.every
    fields = {"timezone": "timezone", "catch_up": "catch_up", "overlap": "overlap"}
    for attr, field in {**fields, "owner": "owner"}.items():
        if getattr(args, attr) is not None:
            body[field] = getattr(args, attr)
    job = _job(args)
    if job is not None:
        body["job"] = job
    return body


def resolve(api: Api, ref: str) -> str:
    """The id of the schedule ``ref`` names: an id as is, else looked up by name (the API
    filters, so any number of schedules may exist)."""
    if _UUID.match(ref):
        return ref
    found = api.call("GET", f"/v1/schedules?{urlencode({'name': ref})}")["items"]
    if not found:
        raise ApiRefused(f"not_found: no schedule named {ref!r}")
    return str(found[0]["id"])


def _when(value: str | None, timezone: str = "UTC") -> str:
    """An instant on the schedule's own wall clock."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(ZoneInfo(timezone)).strftime("%F %T %Z")


def _print_schedule(schedule: dict[str, Any]) -> None:
    timing = schedule["cron"] or f"every {schedule['interval_seconds']:g}s"
    state = "paused" if schedule["paused"] else "active"
    print(
        f"{schedule['id']}  {schedule['name']:<20}  {timing:<16}  {schedule['timezone']:<14}  "
        f"{schedule['job']['kind']:<10}  {state:<6}  "
        f"next {_when(schedule['next_fire_at'], schedule['timezone'])}  "
        f"last {_when(schedule['last_fired_at'], schedule['timezone'])}"
    )


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        body = {"name": args.name, **_body(args), "paused": args.paused}
        if "job" not in body:
            raise ApiRefused("--kind is required")
        _print_schedule(api.call("POST", "/v1/schedules", body))

    return run(args, settings, action)


def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        body = _body(args)
        if args.new_name:
            body["name"] = args.new_name
        schedule_id = resolve(api, args.schedule)
        _print_schedule(api.call("PATCH", f"/v1/schedules/{schedule_id}", body))

    return run(args, settings, action)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        items = api.call("GET", "/v1/schedules")["items"]
        for schedule in items:
            _print_schedule(schedule)
        if not items:
            print("(no schedules)")

    return run(args, settings, action)


def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        schedule = api.call("GET", f"/v1/schedules/{resolve(api, args.schedule)}")
        print(json.dumps(schedule, indent=2))

    return run(args, settings, action)


def _set_paused(args: argparse.Namespace, settings: Settings, verb: str) -> int:
    def action(api: Api) -> None:
        _print_schedule(api.call("POST", f"/v1/schedules/{resolve(api, args.schedule)}/{verb}"))

    return run(args, settings, action)


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return _set_paused(args, settings, "pause")


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _set_paused(args, settings, "resume")


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        schedule_id = resolve(api, args.schedule)
        api.call("DELETE", f"/v1/schedules/{schedule_id}")
        print(f"Deleted schedule {schedule_id}.")

    return run(args, settings, action)


def cmd_firings(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        schedule_id = resolve(api, args.schedule)
        page = api.call("GET", f"/v1/schedules/{schedule_id}/firings?limit={args.limit}")
        for firing in page["items"]:
            jobs = ", ".join(firing["job_ids"]) or "-"
            print(f"{_when(firing['fire_time'])}  {firing['status']:<17}  {jobs}")
        if not page["items"]:
            print("(no firings yet)")

    return run(args, settings, action)
