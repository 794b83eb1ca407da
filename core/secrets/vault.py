"""The secrets vault: named values stored Fernet-encrypted in the ``secrets`` table.

Keys come from ``CONVEYOR_SECRETS_KEY`` (comma-separated, newest first). ``MultiFernet``
encrypts with the first and decrypts with any, so rotation is: put the new key first, run
``rotate_all`` (``conveyor secrets rotate-key``), then drop the old key. Plain values exist
only in the process that called ``put`` or ``read_values``; listing never decrypts.
Functions take a session and never commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.errors import ConveyorError, InvalidRequest, SecretNotFound
from core.models import Secret
from core.settings import Settings

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_VALUE_BYTES = 64 * 1024
ROTATE_BATCH = 500


class VaultKeyError(ConveyorError):
    """The secrets key cannot decrypt a stored secret (wrong or dropped CONVEYOR_SECRETS_KEY)."""

    code = "secrets_key_mismatch"


class Cipher:
    """Fernet with rotation: encrypt with the newest key, decrypt with any."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("CONVEYOR_SECRETS_KEY holds no key")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as error:
            raise ValueError(
                "CONVEYOR_SECRETS_KEY: each key must be 32 url-safe base64-encoded bytes "
                "(Fernet.generate_key())"
            ) from error

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        raw = settings.secrets_key.get_secret_value()
        return cls([key.strip() for key in raw.split(",") if key.strip()])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str, *, name: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as error:
            raise VaultKeyError(
                f"Secret {name!r} cannot be decrypted with CONVEYOR_SECRETS_KEY "
                "(was the key that encrypted it dropped?)."
            ) from error

    def rotate(self, token: str, *, name: str) -> str:
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as error:
            raise VaultKeyError(f"Secret {name!r} cannot be decrypted with any key.") from error


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    name: str
    version: int
    created_at: datetime
    updated_at: datetime


def check_name(name: str, *, field: str = "name") -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            "A secret name is 1-128 characters: letters, digits, '_', '.', '-', "
            "starting with a letter or digit.",
            where={"field": field},
        )
    return name


def _info(row: Secret) -> SecretInfo:
    return SecretInfo(row.name, row.version, row.created_at, row.updated_at)


def put(session: Session, cipher: Cipher, *, name: str, value: str) -> SecretInfo:
    """Create the secret, or replace its value as the next version."""
    check_name(name)
    if not value:
        raise InvalidRequest("A secret's value must not be empty.", where={"field": "value"})
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise InvalidRequest(
            f"A secret's value is at most {MAX_VALUE_BYTES} bytes.", where={"field": "value"}
        )
    ciphertext = cipher.encrypt(value)
    row = session.scalar(
        pg_insert(Secret)
        .values(name=name, version=1, ciphertext=ciphertext)
        .on_conflict_do_update(
            index_elements=[Secret.name],
            set_={
                "ciphertext": ciphertext,
                "version": Secret.version + 1,
                "updated_at": sa.func.now(),
            },
        )
        .returning(Secret)
    )
    assert row is not None
    return _info(row)


def list_secrets(session: Session) -> list[SecretInfo]:
    rows = session.scalars(sa.select(Secret).order_by(Secret.name))
    return [_info(row) for row in rows]


def delete(session: Session, *, name: str) -> None:
    deleted = session.scalar(sa.delete(Secret).where(Secret.name == name).returning(Secret.name))
    if deleted is None:
        raise SecretNotFound(f"No secret named {name!r}.", where={"path": "name"})


def read_values(session: Session, cipher: Cipher, *, names: set[str]) -> dict[str, str]:
    """The plain values of ``names`` (each must exist); for workers resolving references."""
    rows = session.execute(
        sa.select(Secret.name, Secret.ciphertext).where(Secret.name.in_(sorted(names)))
    ).all()
    found = {name: cipher.decrypt(token, name=name) for name, token in rows}
    missing = sorted(names - found.keys())
    if missing:
        raise SecretNotFound(f"Secret {missing[0]!r} does not exist.", where={"secret": missing[0]})
    return found


def rotate_all(session: Session, cipher: Cipher) -> int:
    """Re-encrypt every secret with the newest key, in batches; returns how many. The value
    and version do not change."""
    rotated = 0
    after = ""
    while True:
        rows = list(
            session.scalars(
                sa.select(Secret)
                .where(Secret.name > after)
                .order_by(Secret.name)
                .limit(ROTATE_BATCH)
                .with_for_update()
            )
        )
        if not rows:
            return rotated
        for row in rows:
            row.ciphertext = cipher.rotate(row.ciphertext, name=row.name)
        session.flush()
        rotated += len(rows)
        after = rows[-1].name
