"""The one settings class. Built by entrypoints (``get_settings``) and passed down."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

DEV_SECRET = "dev-secret-change-me"
DEV_FLOWER_PASSWORD = "conveyor"
# A valid Fernet key for development only (refused in production): secrets stored with it
# are as good as plain text.
DEV_SECRETS_KEY = "ZGV2LXNlY3JldHMta2V5LWNoYW5nZS1tZS0xMjM0NTY="
FERNET_KEY_BYTES = 32
DEV_DATABASE_PASSWORD = "conveyor"
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 24

# A list setting written as "a,b,c" in the environment (pydantic-settings would want JSON).
CommaList = Annotated[list[str], NoDecode]

# The declarations shipped with Conveyor (the built-in ``products`` importer).
BUILTIN_IMPORTERS_DIR = Path(__file__).resolve().parent / "imports" / "declarations"

DEFAULT_TIME_LIMITS = {
    "default": 3600.0,
    "noop": 60.0,
    "sleep": 300.0,
    "import": 3600.0,
    "deployment": 3600.0,
}


def parse_addresses(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` -> [(host, port), ...]."""
    addresses = []
    for entry in value.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port entries separated by commas, got {entry!r}")
        addresses.append((host, int(port)))
    return addresses


class Settings(BaseSettings):
    """Every knob Conveyor reads, from ``CONVEYOR_*`` environment variables or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "test", "production"] = "development"
    debug: bool = False
    secret_key: SecretStr = SecretStr(DEV_SECRET)

    # The platform logs in as the non-superuser role that owns its tables (scripts/setup
    # and docker-compose.yml create it). A password given separately replaces the URL's.
    database_url: str = (
        f"postgresql+psycopg://conveyor:{DEV_DATABASE_PASSWORD}@127.0.0.1:5432/conveyor"
    )
    database_password: SecretStr | None = None
    database_connect_timeout: int = Field(default=3, ge=1)
    # Guards on every connection, so a stuck statement, a forgotten transaction or a
    # half-open TCP connection cannot hold a worker (or a lock) past its lease.
    database_statement_timeout: float = Field(default=60.0, gt=0)
    database_lock_timeout: float = Field(default=10.0, gt=0)
    database_idle_in_transaction_timeout: float = Field(default=120.0, gt=0)
    # TCP keepalive probes start after this many idle seconds, then every third of it; with
    # tcp_user_timeout, unacknowledged sends fail after about three times this.
    database_keepalive_seconds: int = Field(default=10, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Credentials for a Redis with `requirepass` or an ACL user; they replace the URL's.
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    # High availability: with Sentinels set (host:port,host:port,...), every Redis user in
    # the platform (Celery broker, publisher, relay, health, Flower) finds the master of
    # ``redis_master_name`` through them; redis_url then only gives the database number and
    # the master's credentials (redis://[user:password@]any-host/db).
    redis_sentinels: str | None = None
    redis_master_name: str = "conveyor"
    redis_sentinel_password: SecretStr | None = None
    redis_socket_timeout: float = Field(default=0.5, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Host headers the API answers (TrustedHost; "*" for any) and origins allowed to call it
    # from a browser (CORS; none by default).
    allowed_hosts: CommaList = Field(default_factory=lambda: ["localhost", "127.0.0.1"])
    cors_origins: CommaList = Field(default_factory=list)
    # Request bodies other than uploads are refused past this size before anything reads them.
    max_json_body_bytes: int = Field(default=1 << 20, gt=0)
    # /metrics: on the API port only with this bearer token; or, with metrics_port, on a
    # separate listener (loopback by default) without a token. Neither: not served.
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Failed authentications allowed per client address and window before 429.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window: float = Field(default=60.0, gt=0)
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_user: str = "admin"
    flower_password: SecretStr = SecretStr(DEV_FLOWER_PASSWORD)

    storage_dir: Path = Path("var/storage")
    max_upload_bytes: int = Field(default=1 << 30, gt=0)
    # Uploaded bytes one API key may keep stored at once (uploads still needed by a job or
    # within their retention); past it a submit answers 413.
    upload_quota_bytes: int = Field(default=10 << 30, gt=0)
    # A stored upload is deleted once no job needs it and its last job ended this long ago
    # (a failed import can be retried until then).
    upload_retention_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    # Importer declarations (YAML/JSON Table Schemas), one file per importer.
    importers_dir: Path = BUILTIN_IMPORTERS_DIR
    # Rows per import unit: each batch commits its rows, rejected rows, counters and
    # checkpoint in one transaction, so this bounds both memory and work redone after a crash.
    import_batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    # ... and at most this many bytes per batch, so a file of huge rows stays in bounds.
    import_batch_bytes: int = Field(default=64 << 20, ge=1 << 16)
    # Longest single CSV field accepted by the parser (Python's csv default is 128 KiB).
    import_max_field_chars: int = Field(default=16 << 20, ge=1024)
    # Longest CSV record (all its lines) in bytes, and most columns: a file past either
    # fails at once instead of growing the worker's memory.
    import_max_record_bytes: int = Field(default=32 << 20, ge=1024)
    import_max_columns: int = Field(default=1_000, ge=1, le=10_000)

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    # A running job's lease; a heartbeat beside the job renews it every third of this.
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    reaper_interval: float = Field(default=10.0, gt=0)
    # A crashed worker's job is running again within this many seconds: its lease runs out
    # (at most lease_seconds after its last renewal), then the next reaper pass, in any
    # worker or API process, puts it back and publishes it. Redis' own visibility timeout
    # (1 h) never comes into play.
    reaper_bound_seconds: float = Field(default=60.0, gt=0)
    relay_interval: float = Field(default=2.0, gt=0)
    # A queued job published this long ago and still not claimed, while its queue in Redis
    # holds fewer messages than such jobs, lost its message (eviction, a failover, a worker
    # that dropped it): it is published again.
    republish_after_seconds: float = Field(default=300.0, gt=0)
    # Run-time limit per job kind (seconds, per attempt): past it the body is stopped and the
    # job fails with time_limit_exceeded; past it plus the grace, the pool process is killed
    # and the job fails the same way. A JSON object; entries given override the defaults,
    # e.g. CONVEYOR_TIME_LIMITS='{"sleep": 60}'. Kinds not listed get "default".
    time_limits: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TIME_LIMITS))
    time_limit_grace_seconds: float = Field(default=30.0, gt=0)

    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_timeout: float = Field(default=30.0, gt=0)

    worker_concurrency: int = Field(default=2, ge=1)

    # --- secrets and deployments ---
    # Fernet keys, comma-separated, newest first: values are encrypted with the first and
    # decrypted with any (rotation: put the new key first, `conveyor secrets rotate-key`,
    # then drop the old one).
    secrets_key: SecretStr = SecretStr(DEV_SECRETS_KEY)
    # Server-side Ansible projects: a deployment's {"project": NAME} is a directory here.
    projects_dir: Path = Path("var/projects")
    # Where each run's private directory (key, variables, runner artifacts) lives while it
    # runs; memory-backed by default so secrets never reach a disk. Empty: the system temp.
    deploy_run_dir: Path | None = Path("/dev/shm/conveyor-runs")
    # Running deployments across all workers; more wait queued (waiting_reason).
    deploy_max_running: int = Field(default=2, ge=1)
    # Defaults and operator maxima of a deployment's `limits` (its timeout_seconds is the
    # job's run-time limit: time_limits["deployment"]) and `retry`.
    deploy_memory_mb: int = Field(default=1024, ge=64)
    deploy_max_memory_mb: int = Field(default=4096, ge=64)
    deploy_cpu_seconds: int = Field(default=600, ge=1)
    deploy_max_cpu_seconds: int = Field(default=3600, ge=1)
    deploy_retry_attempts: int = Field(default=3, ge=1)
    deploy_max_retry_attempts: int = Field(default=10, ge=1)
    deploy_retry_backoff_seconds: float = Field(default=5.0, ge=0)
    deploy_max_retry_backoff_seconds: float = Field(default=300.0, ge=0)
    # Cancel: SIGTERM to ansible-playbook, SIGKILL to its whole tree this much later.
    deploy_kill_grace_seconds: float = Field(default=5.0, gt=0)
    # A job held back by a limit is offered to a worker again this often, even when no
    # finishing job woke it (its finisher crashed, a lease expired).
    waiting_recheck_seconds: float = Field(default=10.0, gt=0)
    # Schedules (core/schedules): every API and worker process ticks this often; a firing
    # picked up later than the grace (at most half the schedule's period, at least two
    # ticks + 1 s) counts as missed and follows the schedule's catch_up policy.
    schedule_tick_interval: float = Field(default=1.0, gt=0)
    schedule_misfire_grace_seconds: float = Field(default=30.0, gt=0)
    # Server-side drop folder of scheduled imports; unset: no import schedules.
    import_inbox: Path | None = None
    # Retention: finished jobs (with their events, logs and rejected rows) older than this
    # are deleted in batches by every process's recovery loop (one at a time).
    job_retention_days: float = Field(default=30.0, gt=0)
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    retention_batch_rows: int = Field(default=5_000, ge=1, le=100_000)

    @field_validator("secrets_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        keys = [key.strip() for key in value.get_secret_value().split(",") if key.strip()]
        for key in keys:
            try:
                raw = base64.urlsafe_b64decode(key.encode())
            except ValueError:
                raw = b""
            if len(raw) != FERNET_KEY_BYTES:
                raise ValueError(
                    "each comma-separated key must be 32 url-safe base64-encoded bytes, e.g. "
                    "from `python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`"
                )
        if not keys:
            raise ValueError("at least one key is needed")
        return value

    @model_validator(mode="after")
    def _reaper_within_bound(self) -> Settings:
        if self.lease_seconds + self.reaper_interval > self.reaper_bound_seconds:
            raise ValueError(
                f"CONVEYOR_LEASE_SECONDS ({self.lease_seconds}) + CONVEYOR_REAPER_INTERVAL "
                f"({self.reaper_interval}) must not exceed CONVEYOR_REAPER_BOUND_SECONDS "
                f"({self.reaper_bound_seconds}): a crashed worker's job would wait longer"
            )
        return self

    @field_validator(
        "metrics_token",
        "database_password",
        "redis_username",
        "redis_password",
        "redis_sentinel_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``CONVEYOR_METRICS_TOKEN=``) means "not set", never an empty
        credential that an empty header would match."""
        return None if value == "" else value

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """``a, b`` or a JSON list."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_addresses(value)  # raises ValueError with the offending entry
            return value.strip()
        return None

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port) pairs; empty without Sentinel."""
        return parse_addresses(self.redis_sentinels) if self.redis_sentinels else []

    @field_validator("time_limits")
    @classmethod
    def _time_limits(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(kind for kind, limit in value.items() if limit <= 0)
        if bad:
            raise ValueError(f"time limits must be positive seconds (not for {', '.join(bad)})")
        return {**DEFAULT_TIME_LIMITS, **value}

    def time_limit_for(self, kind: str) -> float:
        """The run-time limit (seconds) of one attempt of a job of ``kind``."""
        return self.time_limits.get(kind, self.time_limits["default"])

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env != "production":
            return self
        problems = self._weak_credentials()
        if self.flower_password.get_secret_value() == DEV_FLOWER_PASSWORD:
            problems.append("CONVEYOR_FLOWER_PASSWORD must not be the development default")
        if "*" in self.cors_origins:
            problems.append("CONVEYOR_CORS_ORIGINS must list origins, not '*'")
        if self.debug:
            problems.append("CONVEYOR_DEBUG must be off in production")
        if DEV_SECRETS_KEY in self.secrets_key.get_secret_value():
            problems.append("CONVEYOR_SECRETS_KEY must not contain the development key")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self

    def _weak_credentials(self) -> list[str]:
        problems = []
        secret = self.secret_key.get_secret_value()
        if secret == DEV_SECRET or len(secret) < MIN_SECRET_LENGTH:
            problems.append(f"CONVEYOR_SECRET_KEY must be set to {MIN_SECRET_LENGTH}+ characters")
        if make_url(self.sqlalchemy_url).password == DEV_DATABASE_PASSWORD:
            problems.append("the database password must not be the development default")
        token = self.metrics_token.get_secret_value() if self.metrics_token else None
        if token is not None and len(token) < MIN_METRICS_TOKEN_LENGTH:
            problems.append(
                f"CONVEYOR_METRICS_TOKEN must be {MIN_METRICS_TOKEN_LENGTH}+ characters"
            )
        return problems

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver, whatever scheme the user wrote, and
        the separately given password, if any."""
        url = self.database_url
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url[len(prefix) :]
                break
        if self.database_password is None:
            return url
        with_password = make_url(url).set(password=self.database_password.get_secret_value())
        return with_password.render_as_string(hide_password=False)

    @property
    def libpq_url(self) -> str:
        """The database URL as libpq tools (psql, psycopg.connect) expect it."""
        return self.sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def redis_url_with_credentials(self) -> str:
        """``redis_url`` with the separately given username/password, if any: what every
        Redis client (Celery's broker, ours, Flower's) is built from."""
        if self.redis_username is None and self.redis_password is None:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        host = parts.netloc.rpartition("@")[2]
        user = quote(self.redis_username or parts.username or "", safe="")
        password = self.redis_password.get_secret_value() if self.redis_password else None
        userinfo = user if password is None else f"{user}:{quote(password, safe='')}"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, for log redaction."""
        values = [self.secret_key, self.flower_password, self.metrics_token]
        values += [self.database_password, self.redis_password, self.redis_sentinel_password]
        found = [value.get_secret_value() for value in values if value is not None]
        passwords = [make_url(self.sqlalchemy_url).password]
        passwords.append(urlsplit(self.redis_url_with_credentials).password)
        found += [unquote(password) for password in passwords if password]
        found += [key.strip() for key in self.secrets_key.get_secret_value().split(",")]
        # The development defaults are printed in this file: masking them would only garble
        # every log line that says "conveyor".
        public = {DEV_SECRET, DEV_FLOWER_PASSWORD, DEV_DATABASE_PASSWORD, DEV_SECRETS_KEY, ""}
        return [value for value in found if value not in public]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Entrypoints only: library code receives settings as a parameter."""
    return Settings()
