"""``conveyor secrets set NAME | list | delete NAME | rotate-key``: the vault, on the server.

Like ``conveyor keys``, these talk to the database directly with this machine's settings
(CONVEYOR_DATABASE_URL, CONVEYOR_SECRETS_KEY). ``set`` reads the value from standard input,
so it never appears in the shell history or in ``ps``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC

from cli.sessions import open_sessions
from core import db
from core.secrets import vault
from core.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secrets = sub.add_parser("secrets", help="manage secrets (values read from stdin)")
    commands = secrets.add_subparsers(dest="secrets_command", required=True)
    put = commands.add_parser("set", help="store NAME's value, read from standard input")
    put.add_argument("name")
    put.set_defaults(handler=cmd_set)
    commands.add_parser("list", help="names, versions and dates").set_defaults(handler=cmd_list)
    delete = commands.add_parser("delete", help="delete a secret")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)
    rotate = commands.add_parser(
        "rotate-key",
        help="re-encrypt every secret with the first key of CONVEYOR_SECRETS_KEY",
        description="Rotation: set CONVEYOR_SECRETS_KEY=NEW,OLD everywhere, run this, then "
        "set CONVEYOR_SECRETS_KEY=NEW.",
    )
    rotate.set_defaults(handler=cmd_rotate_key)


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    value = sys.stdin.read()
    # A value piped in by `echo` ends with a newline the user did not mean; keep inner ones.
    if value.endswith("\n") and value.count("\n") == 1:
        value = value[:-1]
    cipher = vault.Cipher.from_settings(settings)
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        info = vault.put(session, cipher, name=args.name, value=value)
    print(f"Stored secret {info.name!r} (version {info.version}).")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        infos = vault.list_secrets(session)
    print(f"{'NAME':<32}  {'VERSION':>7}  {'CREATED (UTC)':<16}  UPDATED (UTC)")
    for info in infos:
        print(
            f"{info.name:<32}  {info.version:>7}  "
            f"{info.created_at.astimezone(UTC):%Y-%m-%d %H:%M}  "
            f"{info.updated_at.astimezone(UTC):%Y-%m-%d %H:%M}"
        )
    if not infos:
        print("(no secrets)")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        vault.delete(session, name=args.name)
    print(f"Deleted secret {args.name!r}.")
    return 0


def cmd_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    cipher = vault.Cipher.from_settings(settings)
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        count = vault.rotate_all(session, cipher)
    print(f"Re-encrypted {count} secret(s) with the first key of CONVEYOR_SECRETS_KEY.")
    return 0
