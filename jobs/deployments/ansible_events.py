"""ansible-runner events → the job's durable log, redacted, plus what the run concluded.

Every event Ansible emits becomes one ``job_logs`` row, in Ansible's order, written before
the next event is read (so a streaming client sees it within milliseconds). Every string
that is stored — the output line, host and task names, result messages — goes through the
run's ``Redactor`` first: a resolved secret that a playbook prints is stored and streamed as
``********``. The event is never written to disk (the handler returns False, so runner
keeps no ``job_events/*.json``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.lifecycle.job_logs import LogLine
from core.secrets.redact import Redactor

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_MESSAGE_CHARS = 4000
# Per host in playbook_on_stats (Ansible's names) -> the recap's names.
RECAP_FIELDS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}
HOST_RESULT_EVENTS = {
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_unreachable",
    "runner_on_skipped",
    "runner_item_on_failed",
    "runner_on_async_failed",
}


def clean_output(stdout: str) -> str:
    """Ansible's display output as plain text: no colours, no CR, no leading blank line."""
    return ANSI_ESCAPE.sub("", stdout).replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def recap_from_stats(event_data: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per host: ok, changed, failed, unreachable, skipped, rescued, ignored."""
    hosts: set[str] = set(event_data.get("processed") or {})
    for source in RECAP_FIELDS:
        hosts |= set(event_data.get(source) or {})
    return {
        host: {
            name: int((event_data.get(source) or {}).get(host, 0))
            for source, name in RECAP_FIELDS.items()
        }
        for host in sorted(hosts)
    }


@dataclass
class EventRecorder:
    """The runner ``event_handler`` of one run: stores each event, remembers the recap."""

    redactor: Redactor
    write: Callable[[list[LogLine]], None]
    recap: dict[str, dict[str, int]] | None = None
    events: int = 0
    unreachable_hosts: set[str] = field(default_factory=set)
    failed_hosts: set[str] = field(default_factory=set)

    def __call__(self, event: dict[str, Any]) -> bool:
        self.write([self.to_line(event)])
        self.events += 1
        return False  # runner must not keep its own (unredacted) copy on disk

    def to_line(self, event: dict[str, Any]) -> LogLine:
        name = str(event.get("event") or "unknown")
        event_data: dict[str, Any] = event.get("event_data") or {}
        # When Ansible emitted it (its callback's clock): how late a reader sees it.
        data: dict[str, Any] = {"counter": event.get("counter"), "created": event.get("created")}
        host = event_data.get("host")
        if name in HOST_RESULT_EVENTS:
            data.update(self._host_result(name, str(host), event_data))
        if name == "playbook_on_stats":
            self.recap = self.redactor.data(recap_from_stats(event_data))
            data["recap"] = self.recap
        return LogLine(
            event=name,
            line=self.redactor.text(clean_output(str(event.get("stdout") or ""))),
            host=self.redactor.text(str(host)) if host else None,
            task=self.redactor.text(str(event_data["task"])) if event_data.get("task") else None,
            data=data,
        )

    def _host_result(self, name: str, host: str, event_data: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = event_data.get("res") or {}
        if name == "runner_on_unreachable":
            self.unreachable_hosts.add(host)
        elif "failed" in name and not event_data.get("ignore_errors"):
            self.failed_hosts.add(host)
        data: dict[str, Any] = {"changed": bool(result.get("changed"))}
        if "failed" in name or "unreachable" in name:
            message = str(result.get("msg") or "")[:MAX_MESSAGE_CHARS]
            data["message"] = self.redactor.text(message)
        if event_data.get("duration") is not None:
            data["duration"] = event_data["duration"]
        return data
