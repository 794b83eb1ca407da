"""The one settings class. Built by entrypoints (``get_settings``) and passed down."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

DEV_SECRET = "dev-secret-change-me"
DEV_FLOWER_PASSWORD = "conveyor"
DEV_DATABASE_PASSWORD = "conveyor"
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 24

# A list setting written as "a,b,c" in the environment (pydantic-settings would want JSON).
CommaList = Annotated[list[str], NoDecode]


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
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Credentials for a Redis with `requirepass` or an ACL user; they replace the URL's.
    redis_username: str | None = None
    redis_password: SecretStr | None = None
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
    # Rows per import unit: each batch commits its rows, rejected rows, counters and
    # checkpoint in one transaction, so this bounds both memory and work redone after a crash.
    import_batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    # Longest single CSV field accepted by the parser (Python's csv default is 128 KiB).
    import_max_field_chars: int = Field(default=16 << 20, ge=1024)

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    reaper_interval: float = Field(default=10.0, gt=0)
    # A crashed worker's job is running again within this many seconds: its lease runs out
    # (at most lease_seconds after its last progress write), then the next reaper pass puts
    # it back and publishes it. Redis' own visibility timeout (1 h) never comes into play.
    reaper_bound_seconds: float = Field(default=60.0, gt=0)
    relay_interval: float = Field(default=2.0, gt=0)

    breaker_fail_max: int = Field(default=5, ge=1)
    breaker_reset_timeout: float = Field(default=30.0, gt=0)

    worker_concurrency: int = Field(default=2, ge=1)

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
        "metrics_token", "database_password", "redis_username", "redis_password", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``CONVEYOR_METRICS_TOKEN=``) means "not set", never an empty
        credential that an empty header would match."""
        return None if value == "" else value

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

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
    def broker_url(self) -> str:
        """The Redis URL with the separately given username/password, if any (for Celery,
        kombu and redis-py alike)."""
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
        values += [self.database_password, self.redis_password]
        found = [value.get_secret_value() for value in values if value is not None]
        for url in (make_url(self.sqlalchemy_url).password, urlsplit(self.broker_url).password):
            if url:
                found.append(url)
        # The development defaults are printed in this file: masking them would only garble
        # every log line that says "conveyor".
        public = {DEV_SECRET, DEV_FLOWER_PASSWORD, DEV_DATABASE_PASSWORD}
        return [value for value in found if value not in public]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Entrypoints only: library code receives settings as a parameter."""
    return Settings()
