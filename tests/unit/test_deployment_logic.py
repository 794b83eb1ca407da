"""Pure deployment logic: redaction, the retry decision, the request spec, the inventory,
and turning runner events into log lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.deployments.inventory import build_inventory
from core.deployments.retry_policy import RunOutcome, decide_retry
from core.deployments.spec import DeploymentSpec
from core.errors import InvalidRequest
from core.lifecycle.job_logs import LogLine
from core.secrets.redact import MASK, Redactor, leaf_strings
from core.settings import Settings
from jobs.deployments.ansible_events import EventRecorder, clean_output, recap_from_stats

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA\n"
    "AAAEbm9uZQAAAAAAAAAB\n-----END OPENSSH PRIVATE KEY-----\n"
)


def spec(**fields):
    body = {
        "source": {"project": "demo"},
        "playbook": "site.yml",
        "targets": [{"name": "web", "host": "10.0.0.5"}],
        **fields,
    }
    return DeploymentSpec.model_validate(body)


def test_redactor_hides_values_lines_and_json_escaped_forms():
    redactor = Redactor(["hunter22", KEY])
    text = f"pw=hunter22 key={json.dumps(KEY)} line=b3BlbnNzaC1rZXktdjEAAAAABG5vbmUA"
    redacted = redactor.text(text)
    assert "hunter22" not in redacted
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUA" not in redacted
    assert redacted.count(MASK) >= 3
    assert redactor.data({"msg": ["hunter22"], "hunter22": 1}) == {"msg": [MASK], MASK: 1}


def test_redactor_prefers_the_longest_value():
    assert Redactor(["abc", "abcdef"]).text("xabcdefx") == f"x{MASK}x"


def test_leaf_strings_of_a_secret_object():
    assert sorted(leaf_strings({"a": "x", "b": [1, {"c": "yy"}], "d": True})) == ["x", "yy"]


@pytest.mark.parametrize(
    ("outcome", "run", "retry_failed", "retry"),
    [
        (RunOutcome.unreachable, 1, False, True),
        (RunOutcome.unreachable, 3, False, False),  # budget spent
        (RunOutcome.failed, 1, False, False),
        (RunOutcome.failed, 1, True, True),
        (RunOutcome.error, 1, True, False),
        (RunOutcome.succeeded, 1, True, False),
    ],
)
def test_retry_decision(outcome, run, retry_failed, retry):
    decision = decide_retry(
        outcome, run=run, max_attempts=3, backoff_seconds=4, retry_failed_tasks=retry_failed
    )
    assert decision.retry is retry


def test_backoff_doubles_with_jitter_within_bounds():
    rng = random.Random(7)
    delays = [
        decide_retry(
            RunOutcome.unreachable,
            run=run,
            max_attempts=9,
            backoff_seconds=2,
            retry_failed_tasks=False,
            rng=rng,
        ).delay
        for run in (1, 2, 3)
    ]
    for run, delay in enumerate(delays, start=1):
        ceiling = 2 * 2 ** (run - 1)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    "fields",
    [
        {"playbook": "../etc/site.yml"},
        {"playbook": "/abs/site.yml"},
        {"playbook": "site.txt"},
        {"source": {"project": "a", "git": {"url": "https://example.com/r.git"}}},
        {"source": {"git": {"url": "http://example.com/r.git"}}},  # token in clear
        {"source": {"git": {"url": "https://user:pw@example.com/r.git"}}},
        {"source": {"git": {"url": "https://example.com/r.git", "ref": "--upload-pack=x"}}},
        {"github_token_ref": "tok"},  # a project source has nothing to clone
        {"targets": []},
        {"targets": [{"name": "a", "host": "h"}, {"name": "b", "host": "H"}]},
        {"extra_vars": {"not a name": 1}},
        {"ssh_key_ref": "bad name!"},
        {"unknown": 1},
    ],
)
def test_spec_refuses_bad_requests(fields):
    with pytest.raises(ValidationError):
        spec(**fields)


def test_spec_accepts_loopback_http_and_fills_limits():
    settings = Settings(_env_file=None)
    loopback = spec(source={"git": {"url": "http://127.0.0.1:8080/r.git", "ref": "v1.2"}})
    effective = loopback.with_defaults(settings)
    assert effective.limits.memory_mb == settings.deploy_memory_mb
    assert effective.limits.timeout_seconds == int(settings.time_limit_for("deployment"))
    assert effective.retry.max_attempts == settings.deploy_retry_attempts
    assert effective.lock_keys == ["10.0.0.5:22"]


def test_spec_refuses_limits_above_the_operator_maxima():
    settings = Settings(_env_file=None)
    with pytest.raises(InvalidRequest) as caught:
        spec(limits={"memory_mb": settings.deploy_max_memory_mb + 1}).with_defaults(settings)
    assert caught.value.where == {"field": "limits.memory_mb"}


def test_inventory_lists_hosts_groups_and_the_key_file():
    targets = spec(
        targets=[
            {"name": "web", "host": "10.0.0.5", "port": 2222, "user": "deploy", "groups": ["app"]},
            {"name": "db", "host": "[::1]"},
        ]
    ).targets
    inventory = build_inventory(targets, key_file="/run/key")
    hosts = inventory["all"]["hosts"]
    assert hosts["web"] == {
        "ansible_host": "10.0.0.5",
        "ansible_port": 2222,
        "ansible_user": "deploy",
        "ansible_ssh_private_key_file": "/run/key",
    }
    assert hosts["db"]["ansible_host"] == "::1"
    assert inventory["all"]["children"] == {"app": {"hosts": {"web": {}}}}


def test_events_become_redacted_log_lines_and_a_recap():
    written: list[LogLine] = []
    recorder = EventRecorder(Redactor(["s3cret-value"]), written.extend)
    recorder(
        {
            "event": "runner_on_failed",
            "counter": 5,
            "stdout": "\x1b[0;31mfatal: [web]: FAILED! => s3cret-value\x1b[0m\r\n",
            "event_data": {
                "host": "web",
                "task": "use s3cret-value",
                "res": {"msg": "s3cret-value"},
            },
        }
    )
    stats = {"ok": {"web": 1}, "failures": {"web": 1}, "dark": {}, "processed": {"web": 1}}
    recorder({"event": "playbook_on_stats", "counter": 6, "stdout": "", "event_data": stats})
    failed, summary = written
    assert failed.line == f"fatal: [web]: FAILED! => {MASK}"
    assert failed.task == f"use {MASK}"
    assert failed.data["message"] == MASK
    assert recorder.failed_hosts == {"web"}
    assert summary.data["recap"]["web"]["failed"] == 1
    assert recorder.recap == recap_from_stats(stats)
    assert clean_output("\r\nPLAY\r\n") == "PLAY"


def test_ssh_connection_sharing_only_where_the_socket_path_fits():
    from jobs.deployments.ansible_process import _ssh_args

    # ssh binds "<dir>/<10-char hash>.<16 random chars>" first: 28 characters past the dir.
    fits = Path("/r") / ("x" * (108 - len("/r/") - 3 - 30))
    too_deep = Path("/r") / ("x" * (108 - len("/r/") - 3 - 20))
    assert "ControlMaster=auto" in _ssh_args(fits)
    assert "ControlMaster" not in _ssh_args(too_deep)
