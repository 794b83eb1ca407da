"""``conveyor importers check FILE`` and ``conveyor importers list``: importer declarations
on this machine (CONVEYOR_IMPORTERS_DIR), without the API or the database; and
``conveyor uploads purge``, which deletes stored uploads no job needs any more."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import db
from core.imports import uploads
from core.imports.ddl import create_table_sql
from core.imports.declaration import InvalidDeclaration, read_declaration
from core.imports.registry import ImporterRegistry
from core.settings import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    importers = sub.add_parser(
        "importers", help="check and list importer declarations"
    ).add_subparsers(dest="importers_command", required=True)
    check = importers.add_parser(
        "check", help="validate a declaration file and print the table it implies"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=cmd_check)
    importers.add_parser(
        "list", help="the declarations in CONVEYOR_IMPORTERS_DIR, valid or not"
    ).set_defaults(handler=cmd_list)

    purge = sub.add_parser("uploads", help="stored uploads").add_subparsers(
        dest="uploads_command", required=True
    )
    purge.add_parser(
        "purge",
        help="delete stored uploads that no job needs (past CONVEYOR_UPLOAD_RETENTION_SECONDS)",
    ).set_defaults(handler=cmd_purge)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        importer = read_declaration(args.file)
    except InvalidDeclaration as error:
        print(f"conveyor: invalid declaration: {error.message}", file=sys.stderr)
        return 1
    grants = [*(f"role {r.value}" for r in sorted(importer.roles)), *sorted(importer.scopes)]
    print(f"-- importer {importer.name!r}: {len(importer.columns)} fields, mode {importer.mode}")
    print(f"-- key: {', '.join(importer.key) or '(none: insert only)'}")
    print(f"-- may run it: admins, {', '.join(grants) if grants else 'nobody else'}")
    print(f"{create_table_sql(importer)};")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = ImporterRegistry(settings.importers_dir).entries()
    print(f"# {settings.importers_dir}")
    if not entries:
        print("(no declarations)")
    invalid = 0
    for entry in entries:
        importer = entry.importer
        if importer is None:
            invalid += 1
            print(f"{entry.path.stem:<24} INVALID  {entry.error}")
            continue
        grants = [r.value for r in sorted(importer.roles)] + sorted(importer.scopes)
        print(
            f"{importer.name:<24} {importer.mode:<7}  table {importer.table}  "
            f"key ({', '.join(importer.key)})  {len(importer.columns)} fields  "
            f"run by: admin{', ' if grants else ''}{', '.join(grants)}"
        )
    return 1 if invalid else 0


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    engine = db.make_engine(settings, pool_size=1)
    try:
        result = uploads.purge(
            db.make_sessionmaker(engine),
            settings.storage_dir,
            retention_seconds=settings.upload_retention_seconds,
        )
    finally:
        engine.dispose()
    print(
        f"Deleted {result.deleted} stored upload(s) ({result.deleted_bytes:,} bytes); "
        f"kept {result.kept}."
    )
    return 0
