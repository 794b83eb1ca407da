"""`conveyor importers check|list`, `conveyor keys create --scope` and `conveyor uploads
purge`: the installed console script in subprocesses."""

from __future__ import annotations

import json

from core.api_keys import Principal
from tests.integration.test_cli import authenticate, cli_env, conveyor, ok

VALID = {
    "table": "orders",
    "scopes": ["imports:orders"],
    "schema": {
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "total", "type": "number", "decimalPlaces": 2, "maxDigits": 10},
        ],
        "primaryKey": ["id"],
    },
}


def test_check_prints_the_ddl_a_valid_declaration_implies(tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(VALID))
    result = ok(conveyor("importers", "check", str(path), env=cli_env(), cwd=tmp_path))
    assert 'CREATE TABLE "orders" (' in result.stdout
    assert '"id" bigint NOT NULL' in result.stdout
    assert '"total" numeric(10,2)' in result.stdout
    assert 'PRIMARY KEY ("id")' in result.stdout
    assert "imports:orders" in result.stdout


def test_check_explains_an_invalid_declaration(tmp_path):
    path = tmp_path / "orders.yaml"
    path.write_text("table: orders\nschema:\n  fields: [{name: id, type: money}]\n")
    result = conveyor("importers", "check", str(path), env=cli_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert "schema.fields[0] (id).type" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_shows_valid_and_invalid_declarations(tmp_path):
    (tmp_path / "orders.json").write_text(json.dumps(VALID))
    (tmp_path / "broken.yaml").write_text("table: [")
    env = cli_env(CONVEYOR_IMPORTERS_DIR=str(tmp_path))
    result = conveyor("importers", "list", env=env, cwd=tmp_path)
    assert result.returncode == 1  # an invalid declaration is worth a non-zero exit
    assert "orders" in result.stdout
    assert "imports:orders" in result.stdout
    assert "broken" in result.stdout
    assert "INVALID" in result.stdout
    builtin = ok(conveyor("importers", "list", env=cli_env(), cwd=tmp_path))
    assert "products" in builtin.stdout


def test_keys_create_with_scopes(database_url, sessions, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url)
    args = ["keys", "create", "--name", "ci", "--role", "submitter"]
    created = ok(
        conveyor(*args, "--scope", "imports:orders", "--scope", "imports:x", env=env, cwd=tmp_path)
    )
    principal = authenticate(sessions, created.stdout.strip().splitlines()[-1])
    assert isinstance(principal, Principal)
    assert principal.scopes == {"imports:orders", "imports:x"}
    assert "imports:orders" in ok(conveyor("keys", "list", env=env, cwd=tmp_path)).stdout
    bad = conveyor(*args, "--scope", "no spaces", env=env, cwd=tmp_path)
    assert bad.returncode == 2


def test_uploads_purge_reports_what_it_did(database_url, sessions, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url, CONVEYOR_STORAGE_DIR=str(tmp_path))
    result = ok(conveyor("uploads", "purge", env=env, cwd=tmp_path))
    assert "Deleted 0 stored upload(s)" in result.stdout
