"""Settings refuse unsafe production values; built directly, without the environment."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from cli.main import describe_settings_error
from core.broker.celery_config import celery_config
from core.broker.redis_client import master_credentials
from core.settings import DEV_SECRET, DEV_SECRETS_KEY, Settings

GOOD_SECRET = "s" * 40
GOOD_SECRETS_KEY = Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def _no_conveyor_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CONVEYOR_"):
            monkeypatch.delenv(name)


def build(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def production(**values: Any) -> Settings:
    defaults = {
        "env": "production",
        "secret_key": GOOD_SECRET,
        "flower_password": "f" * 20,
        "secrets_key": GOOD_SECRETS_KEY,
        "database_password": "d" * 20,
    }
    return build(**{**defaults, **values})


def test_development_accepts_the_defaults():
    settings = build()

    assert settings.env == "development"
    assert settings.secret_key.get_secret_value() == DEV_SECRET


def test_production_refuses_the_defaults_and_names_every_variable():
    with pytest.raises(ValidationError) as caught:
        build(env="production")

    message = str(caught.value)
    assert "CONVEYOR_SECRET_KEY" in message
    assert "CONVEYOR_FLOWER_PASSWORD" in message
    assert "CONVEYOR_SECRETS_KEY" in message


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"secret_key": DEV_SECRET}, "CONVEYOR_SECRET_KEY"),
        ({"secret_key": "short"}, "CONVEYOR_SECRET_KEY"),
        ({"flower_password": "conveyor"}, "CONVEYOR_FLOWER_PASSWORD"),
        ({"debug": True}, "CONVEYOR_DEBUG"),
        # Rotating away from the development key still refuses to start until it is gone.
        ({"secrets_key": f"{GOOD_SECRETS_KEY},{DEV_SECRETS_KEY}"}, "CONVEYOR_SECRETS_KEY"),
        ({"secrets_key": "not-a-fernet-key"}, "secrets_key"),
        ({"database_password": "conveyor"}, "database password"),
        ({"metrics_token": "short"}, "CONVEYOR_METRICS_TOKEN"),
        ({"cors_origins": "*"}, "CONVEYOR_CORS_ORIGINS"),
    ],
)
def test_production_refuses_each_unsafe_value(values, variable):
    with pytest.raises(ValidationError, match=variable):
        production(**values)


def test_production_accepts_safe_values():
    settings = production()

    assert settings.env == "production"


def test_refusal_reads_cleanly_on_the_command_line():
    with pytest.raises(ValidationError) as caught:
        build(env="production")

    text = describe_settings_error(caught.value)

    assert text.startswith("conveyor: refusing to start")
    assert "CONVEYOR_SECRET_KEY must be set" in text
    assert "input_value" not in text  # no dump of the values (secrets) pydantic received
    assert DEV_SECRET not in text


def test_field_errors_name_the_environment_variable():
    with pytest.raises(ValidationError) as caught:
        build(api_port="not-a-port")

    assert "CONVEYOR_API_PORT:" in describe_settings_error(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db:5432/app",
        "postgresql://u:p@db:5432/app",
        "postgresql+psycopg://u:p@db:5432/app",
    ],
)
def test_database_urls_are_normalised_for_sqlalchemy_and_libpq(url):
    settings = build(database_url=url)

    assert settings.sqlalchemy_url == "postgresql+psycopg://u:p@db:5432/app"
    assert settings.libpq_url == "postgresql://u:p@db:5432/app"


def test_reaper_bound_holds_lease_plus_reaper_interval():
    assert build().reaper_bound_seconds == 60
    assert build(lease_seconds=50, reaper_interval=10).lease_seconds == 50
    with pytest.raises(ValidationError) as refused:
        build(lease_seconds=55, reaper_interval=10)
    assert "CONVEYOR_REAPER_BOUND_SECONDS" in str(refused.value)
    assert build(lease_seconds=55, reaper_interval=10, reaper_bound_seconds=90).lease_seconds == 55


def test_secrets_key_takes_several_keys_newest_first():
    other = Fernet.generate_key().decode()
    settings = build(secrets_key=f" {GOOD_SECRETS_KEY} , {other}")

    assert settings.secrets_key.get_secret_value().count(",") == 1


def test_a_separate_database_password_replaces_the_urls():
    settings = build(database_url="postgresql://app:old@db:5432/app", database_password="n:w@")

    assert settings.sqlalchemy_url == "postgresql+psycopg://app:n%3Aw%40@db:5432/app"
    assert settings.libpq_url == "postgresql://app:n%3Aw%40@db:5432/app"


def test_redis_credentials_join_the_broker_url_percent_encoded():
    assert build(redis_url="redis://r:6379/0").redis_url_with_credentials == "redis://r:6379/0"
    assert (
        build(redis_url="redis://r:6379/0", redis_password="p@ss:/w").redis_url_with_credentials
        == "redis://:p%40ss%3A%2Fw@r:6379/0"
    )
    assert (
        build(
            redis_url="redis://old:x@r:6379/2", redis_username="app", redis_password="pw"
        ).redis_url_with_credentials
        == "redis://app:pw@r:6379/2"
    )


def test_lists_are_read_comma_separated_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONVEYOR_ALLOWED_HOSTS", "api.example.com, *.example.org")
    monkeypatch.setenv("CONVEYOR_CORS_ORIGINS", "https://app.example.com")

    settings = build()

    assert settings.allowed_hosts == ["api.example.com", "*.example.org"]
    assert settings.cors_origins == ["https://app.example.com"]
    assert build().cors_origins == ["https://app.example.com"]
    monkeypatch.delenv("CONVEYOR_CORS_ORIGINS")
    assert build().cors_origins == []  # no cross-origin access by default


def test_secret_values_lists_every_credential():
    settings = build(
        database_url="postgresql://app:dbpass1@db/app",
        redis_url="redis://:redispass1@r/0",
        secret_key=GOOD_SECRET,
        flower_password="flowerpass1",
        metrics_token="m" * 30,
    )

    assert set(settings.secret_values()) >= {
        "dbpass1",
        "redispass1",
        GOOD_SECRET,
        "flowerpass1",
        "m" * 30,
    }


def test_empty_credentials_mean_unset():
    settings = build(metrics_token="", redis_password="", database_password="")

    assert settings.metrics_token is None
    assert settings.redis_password is None
    assert settings.database_password is None


def test_time_limits_override_the_defaults_entry_by_entry():
    settings = build(time_limits={"sleep": 60})
    assert settings.time_limit_for("sleep") == 60
    assert settings.time_limit_for("import") == 3600
    assert settings.time_limit_for("some_new_kind") == settings.time_limits["default"]
    with pytest.raises(ValidationError, match="positive"):
        build(time_limits={"noop": 0})


def test_sentinel_settings_make_every_redis_user_go_through_the_sentinels():
    plain = build(redis_url="redis://:pw@cache:6380/2")
    assert plain.sentinel_addresses == []
    assert celery_config(plain)["broker_url"] == "redis://:pw@cache:6380/2"

    ha = build(
        redis_url="redis://app:s3cret@ignored/2",
        redis_sentinels="s1:26379, s2:26380",
        redis_master_name="main",
        redis_sentinel_password="sentinel-pw",
    )
    assert ha.sentinel_addresses == [("s1", 26379), ("s2", 26380)]
    config = celery_config(ha)
    assert config["broker_url"] == (
        "sentinel://app:s3cret@s1:26379/2;sentinel://app:s3cret@s2:26380/2"
    )
    options = config["broker_transport_options"]
    assert options["master_name"] == "main"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert master_credentials(ha) == {"db": 2, "username": "app", "password": "s3cret"}


@pytest.mark.parametrize("value", ["s1", "s1:port", "s1:70000", ":26379", "s1:26379,"])
def test_malformed_sentinel_lists_are_refused(value):
    with pytest.raises(ValidationError, match="host:port"):
        build(redis_sentinels=value)
