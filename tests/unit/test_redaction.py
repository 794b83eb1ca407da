"""Redaction: nested values, URL credentials, DSN pairs, bearer tokens, known values, and
the whole JSON log line (tracebacks included) as a real logger renders it."""

from __future__ import annotations

import io
import json
import logging

import structlog

from core.logging import RedactingProcessor, configure_logging
from core.secrets.redact import MASK, Redactor
from core.settings import Settings


def test_nested_values_under_secret_keys_are_masked():
    redactor = Redactor()

    event = redactor.mapping(
        {"config": {"db": {"password": "hunter22", "host": "db"}}, "items": [{"token": "t"}]}
    )

    assert event == {"config": {"db": {"password": MASK, "host": "db"}}, "items": [{"token": MASK}]}


def test_credentials_inside_text_are_masked():
    redactor = Redactor()

    text = redactor.text(
        "connect postgresql://app:s3cret@db:5432/app then redis://:r3dis@r:6379/0 "
        "and https://ghp_tokenvalue@github.com/x.git; dsn host=db password=pw123 user=app; "
        "Authorization: Bearer abcdefghijkl; key cvk_abcdefghijklmnop"
    )

    for secret in ("s3cret", "r3dis", "ghp_tokenvalue", "pw123", "abcdefghijkl", "cvk_abc"):
        assert secret not in text
    assert f"postgresql://app:{MASK}@db:5432/app" in text  # the user stays: useful, not secret
    assert f"password={MASK}" in text


def test_known_values_are_masked_anywhere_longest_first():
    redactor = Redactor(["vault-value-1"])
    redactor.add("vault-value-1-and-more", "abc")  # "abc" is too short to mask

    text = redactor.text("a=vault-value-1-and-more b=xvault-value-1x c=abc")

    assert text == f"a={MASK} b=x{MASK}x c=abc"


def test_other_objects_are_masked_through_their_repr():
    class Config:
        def __repr__(self) -> str:
            return "Config(url='postgresql://u:topsecret@h/db')"

    assert Redactor().value({"settings": Config()}) == {
        "settings": f"Config(url='postgresql://u:{MASK}@h/db')"
    }


def test_json_log_lines_carry_no_secret_nested_in_urls_or_tracebacks(tmp_path):
    settings = Settings(
        _env_file=None,
        log_format="json",
        secret_key="k" * 40,
        database_url="postgresql://app:dbpassword9@db/app",
        redis_password="redispassword9",
    )
    configure_logging(settings)
    stream = io.StringIO()
    root = logging.getLogger()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = structlog.get_logger("test")
    try:
        try:
            raise RuntimeError("could not connect to redis://:redispassword9@r:6379/0")
        except RuntimeError:
            log.exception(
                "boom",
                nested={"deep": {"list": ["postgresql://app:dbpassword9@db/app"]}},
                key=settings.secret_key.get_secret_value(),
                url="amqp://guest:guestpass@mq//",
            )
        logging.getLogger("celery.worker").warning("foreign %s", "password=plainpw1")
    finally:
        structlog.reset_defaults()

    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 2
    assert "Traceback" in lines[0]["exception"]  # the traceback is kept, scrubbed
    for secret in ("dbpassword9", "redispassword9", "k" * 40, "guestpass", "plainpw1"):
        assert secret not in output


def test_processor_returns_a_new_event():
    processor = RedactingProcessor(Redactor())
    event = {"password": "x", "event": "e"}

    assert processor(None, "info", event) == {"password": MASK, "event": "e"}
