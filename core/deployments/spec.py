"""What a deployment is: the request model, shared by the API (validation, 422s) and the worker
(which reads the stored params back through the same model).

Secrets appear here only as names (``github_token_ref``, ``secrets_ref``, ``ssh_key_ref``);
values are resolved in the worker (core/secrets/resolve.py). Limits and retry settings are
optional in a request; ``with_defaults`` fills them from the operator's settings and refuses
values above the operator's maxima, so the stored job holds the effective numbers.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import InvalidRequest
from core.lifecycle import commands
from core.secrets.resolve import SecretRefs
from core.secrets.vault import NAME_PATTERN
from core.settings import Settings

KIND = "deployment"
MAX_EXTRA_VARS_BYTES = 64 * 1024
VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_NAME = NAME_PATTERN.pattern
LOOPBACK_NAMES = {"localhost"}
N = TypeVar("N", int, float)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="Inventory name.")
    host: str = Field(
        min_length=1, max_length=253, pattern=r"^[A-Za-z0-9:.\[\]_-]+$", description="Address."
    )
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")
    groups: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if not re.fullmatch(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", group) or group == "all":
                raise ValueError(f"invalid group name {group!r} (letters, digits, _; not 'all')")
        return groups

    @property
    def lock_key(self) -> str:
        """What the per-target lock is on: one deployment per host:port at a time."""
        return f"{self.host.lower()}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class GitSource(_Strict):
    url: str = Field(max_length=2048, description="https:// (or file://) repository URL.")
    ref: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$",
        description="Branch, tag or commit; default: the repository's default branch.",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise ValueError("put credentials in a secret (github_token_ref), not in the URL")
        if parts.scheme == "https" and parts.hostname:
            return url
        if parts.scheme == "file" and parts.path:
            return url
        # A token sent over plain HTTP can be read on the way, unless it never leaves the host.
        if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
            return url
        raise ValueError("the URL must be https:// (or file://, or http:// on loopback)")

    @field_validator("ref")
    @classmethod
    def _ref(cls, ref: str | None) -> str | None:
        if ref is not None and (".." in ref or ref.endswith((".lock", "/"))):
            raise ValueError("not a valid git ref")
        return ref


class Source(_Strict):
    project: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="A directory under CONVEYOR_PROJECTS_DIR.",
    )
    git: GitSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.project is None) == (self.git is None):
            raise ValueError('give exactly one of "project" or "git"')
        return self


class Limits(_Strict):
    timeout_seconds: int | None = Field(default=None, ge=1, description="Wall clock, per run.")
    memory_mb: int | None = Field(default=None, ge=64, description="Ansible's process tree.")
    cpu_seconds: int | None = Field(default=None, ge=1, description="Ansible's process tree.")


class Retry(_Strict):
    max_attempts: int | None = Field(
        default=None, ge=1, description="Runs in all, the first included."
    )
    backoff_seconds: float | None = Field(
        default=None, ge=0, description="First pause; doubles each time, with jitter."
    )
    retry_failed_tasks: bool = Field(
        default=False,
        description="Also retry when a task failed (unreachable hosts are always retried).",
    )


class DeploymentSpec(_Strict):
    source: Source
    playbook: str = Field(min_length=1, max_length=255, description="Path inside the source.")
    targets: list[Target] = Field(min_length=1, max_length=100)
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    github_token_ref: str | None = Field(default=None, pattern=SECRET_NAME)
    secrets_ref: str | None = Field(default=None, pattern=SECRET_NAME)
    ssh_key_ref: str | None = Field(default=None, pattern=SECRET_NAME)
    limits: Limits = Field(default_factory=Limits)
    retry: Retry = Field(default_factory=Retry)

    @field_validator("playbook")
    @classmethod
    def _playbook(cls, playbook: str) -> str:
        path = PurePosixPath(playbook)
        if path.is_absolute() or ".." in path.parts or path.suffix not in (".yml", ".yaml"):
            raise ValueError("a relative .yml/.yaml path inside the source, without '..'")
        return playbook

    @field_validator("extra_vars")
    @classmethod
    def _extra_vars(cls, extra_vars: dict[str, Any]) -> dict[str, Any]:
        for name in extra_vars:
            if not re.fullmatch(VARIABLE_NAME, name):
                raise ValueError(f"{name!r} is not a variable name")
        if len(json.dumps(extra_vars)) > MAX_EXTRA_VARS_BYTES:
            raise ValueError(f"at most {MAX_EXTRA_VARS_BYTES} bytes as JSON")
        return extra_vars

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        names = [target.name for target in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")
        keys = [target.lock_key for target in self.targets]
        if len(set(keys)) != len(keys):
            raise ValueError("each host:port may appear once")
        if self.github_token_ref and self.source.git is None:
            raise ValueError("github_token_ref is for a git source")
        return self

    @property
    def refs(self) -> SecretRefs:
        return SecretRefs(self.github_token_ref, self.secrets_ref, self.ssh_key_ref)

    @property
    def lock_keys(self) -> list[str]:
        return sorted(target.lock_key for target in self.targets)

    def with_defaults(self, settings: Settings) -> DeploymentSpec:
        """The spec with every limit and retry number set: the request's, within the
        operator's maxima (InvalidRequest past one), or the operator's default."""
        limits = Limits(
            # The job's run-time limit (settings.time_limits["deployment"] is the default
            # and the maximum); the heartbeat stops the run when it passes.
            timeout_seconds=int(
                commands.time_limit(
                    settings, KIND, self.limits.timeout_seconds, field="limits.timeout_seconds"
                )
            ),
            memory_mb=_within(
                self.limits.memory_mb,
                settings.deploy_memory_mb,
                settings.deploy_max_memory_mb,
                "limits.memory_mb",
            ),
            cpu_seconds=_within(
                self.limits.cpu_seconds,
                settings.deploy_cpu_seconds,
                settings.deploy_max_cpu_seconds,
                "limits.cpu_seconds",
            ),
        )
        retry = Retry(
            max_attempts=_within(
                self.retry.max_attempts,
                settings.deploy_retry_attempts,
                settings.deploy_max_retry_attempts,
                "retry.max_attempts",
            ),
            backoff_seconds=_within(
                self.retry.backoff_seconds,
                settings.deploy_retry_backoff_seconds,
                settings.deploy_max_retry_backoff_seconds,
                "retry.backoff_seconds",
            ),
            retry_failed_tasks=self.retry.retry_failed_tasks,
        )
        return self.model_copy(update={"limits": limits, "retry": retry})


def _within(requested: N | None, default: N, maximum: N, field: str) -> N:
    if requested is None:
        return min(default, maximum)
    if requested > maximum:
        raise InvalidRequest(
            f"{field} may be at most {maximum:g} (operator limit).", where={"field": field}
        )
    return requested
