"""``conveyor queues list|pause NAME|resume NAME``, through the HTTP API (operator role)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.api_access import Api, add_api_options, run
from core.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queues = sub.add_parser("queues", help="queue depths, workers; pause and resume")
    commands = queues.add_subparsers(dest="queues_command", required=True)
    commands.add_parser("list", help="depth, running, oldest waiting, paused, workers")
    pause = commands.add_parser("pause", help="hold the queue's jobs; running ones finish")
    pause.add_argument("name")
    resume = commands.add_parser("resume", help="run the held jobs")
    resume.add_argument("name")
    for name, handler in (("list", cmd_list), ("pause", cmd_pause), ("resume", cmd_resume)):
        commands.choices[name].set_defaults(handler=handler)
        add_api_options(commands.choices[name])


def _print_queue(queue: dict[str, Any]) -> None:
    age = queue["oldest_waiting_seconds"]
    workers = queue["workers"]
    print(
        f"{queue['name']:<12}  {'paused' if queue['paused'] else 'active':<6}  "
        f"depth {queue['depth']:>6}  running {queue['running']:>4}  "
        f"oldest {'-' if age is None else f'{age:.0f}s':>7}  "
        f"redis {'-' if queue['broker_depth'] is None else queue['broker_depth']:>6}  "
        f"workers {'?' if workers is None else ', '.join(workers) or '-'}"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    def action(api: Api) -> None:
        for queue in api.call("GET", "/v1/queues")["items"]:
            _print_queue(queue)

    return run(args, settings, action)


def _act(args: argparse.Namespace, settings: Settings, verb: str) -> int:
    def action(api: Api) -> None:
        answer = api.call("POST", f"/v1/queues/{args.name}/{verb}")
        _print_queue(answer["queue"])
        held = "held" if verb == "pause" else "released"
        print(f"{answer['jobs_affected']} job(s) {held}.")

    return run(args, settings, action)


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    return _act(args, settings, "pause")


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    return _act(args, settings, "resume")
