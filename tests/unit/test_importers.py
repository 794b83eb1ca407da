"""Importer declarations (Table Schema files) and the registry that reads a directory of them."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from core.api_keys import Principal, Role
from core.imports.ddl import create_table_sql
from core.imports.declaration import InvalidDeclaration, parse_declaration, read_declaration
from core.imports.field_types import FieldType
from core.imports.importer import normalise_header
from core.imports.options import canonical_encoding, parse_delimiter, parse_error_threshold
from core.imports.registry import ImporterNotFound, ImporterRegistry
from core.settings import BUILTIN_IMPORTERS_DIR, Settings
from tests.declared import PRODUCTS, declared

EXAMPLE = """\
table: products
mode: upsert
roles: [submitter]
scopes: ["imports:products"]
aliases: {updated_at: ["Updated At", "last_update"]}
schema:
  fields:
    - {name: sku, type: string, constraints: {required: true, maxLength: 64}}
    - {name: price, type: number, constraints: {minimum: 0}}
    - {name: updated_at, type: datetime}
  primaryKey: [sku]
"""


def _fields(*fields, **rest):
    return {"table": "things", "schema": {"fields": list(fields), **rest}}


def _principal(role=Role.submitter, scopes=()):
    return Principal(uuid.uuid4(), "p", role, frozenset(scopes))


def test_the_default_settings_find_the_builtin_products_declaration():
    assert Settings().importers_dir == BUILTIN_IMPORTERS_DIR
    registry = ImporterRegistry(BUILTIN_IMPORTERS_DIR)
    assert registry.get("products") == PRODUCTS


def test_products_declares_what_the_products_table_holds():
    assert PRODUCTS.key == ("sku",)
    assert PRODUCTS.mode == "upsert"
    assert PRODUCTS.table == "products"
    assert PRODUCTS.required_columns == ("sku", "name")
    price = PRODUCTS.column("price")
    assert (price.type, price.minimum, price.max_digits, price.decimal_places) == (
        FieldType.number,
        Decimal(0),
        12,
        2,
    )
    assert PRODUCTS.column("updated_at").type is FieldType.datetime
    assert "numeric(12,2)" in create_table_sql(PRODUCTS)


def test_the_issue_example_declaration_reads_as_yaml_and_as_json(tmp_path):
    (tmp_path / "products.yaml").write_text(EXAMPLE)
    from_yaml = read_declaration(tmp_path / "products.yaml")
    import yaml

    (tmp_path / "copy.json").write_text(json.dumps(yaml.safe_load(EXAMPLE)))
    from_json = read_declaration(tmp_path / "copy.json")
    assert from_yaml.name == "products"
    assert from_json.name == "copy"
    assert from_yaml.columns == from_json.columns
    assert from_yaml.headers["last_update"] == "updated_at"
    assert from_yaml.headers["updated_at"] == "updated_at"
    assert from_yaml.scopes == {"imports:products"}
    assert from_yaml.roles == {Role.submitter}


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (_fields({"name": "a", "type": "money"}), "schema.fields[0] (a).type"),
        (_fields({"name": "a", "constraints": {"minimum": 1}}), "do not apply to type string"),
        (_fields({"name": "a", "type": "integer", "constraints": {"minimum": "x"}}), "minimum"),
        (_fields({"name": "a", "constraints": {"maxLenght": 3}}), "maxLenght: unknown key"),
        (_fields({"name": "a", "constraints": {"pattern": "("}}), "not a valid regex"),
        (_fields({"name": "a", "constraints": {"minLength": 5, "maxLength": 2}}), "minLength"),
        (
            _fields({"name": "a", "type": "integer", "constraints": {"minimum": 5, "maximum": 1}}),
            "minimum is greater than maximum",
        ),
        (_fields({"name": "a"}, primaryKey=["b"]), "'b' is not a field"),
        (_fields({"name": "a", "type": "number"}, primaryKey="a"), "key fields must be"),
        (_fields({"name": "a"}, {"name": "a"}), "declared twice"),
        (_fields({"name": "a"}, {"name": "A "}), "would match both"),
        (_fields({"name": "imported_at"}), "reserved"),
        (_fields({"name": "x" * 64}), "1-63 bytes"),
        (_fields({"name": "a", "type": "date", "format": "%Q"}), "not a usable pattern"),
        (_fields({"name": "a", "format": "email2"}), "format 'email2' is not defined"),
        (_fields({"name": "a", "decimalPlaces": 2}), "decimalPlaces does not apply"),
        ({**_fields({"name": "a"}), "mode": "upsert"}, "upsert needs a schema.primaryKey"),
        ({**_fields({"name": "a"}), "table": "api_keys"}, "one of Conveyor's own tables"),
        ({**_fields({"name": "a"}), "table": "a.b.c"}, "schema.name"),
        ({**_fields({"name": "a"}), "roles": ["boss"]}, "roles[0]"),
        ({**_fields({"name": "a"}), "aliases": {"b": "x"}}, "'b' is not a field"),
        ({"table": "t"}, "schema: Field required"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_invalid_declarations_say_where_and_why(declaration, message):
    with pytest.raises(InvalidDeclaration) as error:
        parse_declaration("things", declaration)
    assert message in error.value.message
    assert error.value.message.startswith("things: ")


def test_declaration_files_that_cannot_be_read(tmp_path):
    (tmp_path / "bad.yaml").write_text("table: [unclosed")
    (tmp_path / "Bad Name.yaml").write_text(EXAMPLE)
    (tmp_path / "huge.json").write_bytes(b" " * (2 << 20))
    for name, message in [
        ("bad.yaml", "not valid YAML"),
        ("Bad Name.yaml", "must be lowercase"),
        ("huge.json", "larger than"),
    ]:
        with pytest.raises(InvalidDeclaration, match=message):
            read_declaration(tmp_path / name)


def test_primary_key_fields_are_required_and_mode_defaults_from_the_key():
    keyed = declared(**_fields({"name": "a", "type": "integer"}, {"name": "b"}, primaryKey="a"))
    assert keyed.mode == "upsert"
    assert keyed.column("a").required
    keyless = declared(**_fields({"name": "a"}))
    assert keyless.mode == "insert"
    assert keyless.key == ()


def test_registry_reads_changes_and_reports_invalid_files(tmp_path):
    registry = ImporterRegistry(tmp_path)
    assert registry.importers() == {}
    (tmp_path / "one.yaml").write_text(EXAMPLE)
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "notes.txt").write_text("ignored")
    assert set(registry.importers()) == {"one"}
    errors = {e.path.name: e.error for e in registry.entries() if e.error}
    assert set(errors) == {"broken.json"}
    (tmp_path / "one.yaml").write_text(EXAMPLE.replace("table: products", "table: other"))
    os.utime(tmp_path / "one.yaml", ns=(1, 1))  # a change of mtime is what is noticed
    assert registry.get("one").table == "other"
    (tmp_path / "one.json").write_text("{}")
    assert registry.importers() == {}  # one name declared twice: neither counts


def test_permissions_roles_rank_scopes_grant_and_admins_run_everything(tmp_path):
    (tmp_path / "products.yaml").write_text(EXAMPLE)
    (tmp_path / "secret.yaml").write_text(
        EXAMPLE.replace("roles: [submitter]", "roles: [operator]").replace(
            "imports:products", "imports:secret"
        )
    )
    registry = ImporterRegistry(tmp_path)
    submitter = _principal()
    scoped = _principal(scopes={"imports:secret"})
    assert [i.name for i in registry.visible_to(submitter)] == ["products"]
    assert [i.name for i in registry.visible_to(scoped)] == ["products", "secret"]
    assert len(registry.visible_to(_principal(Role.operator))) == 2
    with pytest.raises(ImporterNotFound) as hidden:
        registry.get_for("secret", submitter)
    with pytest.raises(ImporterNotFound) as missing:
        registry.get_for("nope", submitter)
    assert hidden.value.message.replace("secret", "X") == missing.value.message.replace("nope", "X")
    admin_only = parse_declaration("x", {**_fields({"name": "a"})})
    assert admin_only.may_run(_principal(Role.admin))
    assert not admin_only.may_run(_principal(Role.operator))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (" SKU ", "sku"),
        ("Updated At", "updated_at"),
        ("\ufeffname", "\ufeffname"),
        ("PRICE", "price"),
    ],
)
def test_header_normalisation(raw, normal):
    assert normalise_header(raw) == normal


@pytest.mark.parametrize(
    ("raw", "value"), [("100", 100), ("0", 0), ("0.05", 0.05), ("5%", 0.05), ("1.0", 1.0)]
)
def test_error_threshold(raw, value):
    assert parse_error_threshold(raw) == value


@pytest.mark.parametrize("raw", ["-1", "abc", "150%", "1.5"])
def test_bad_error_threshold(raw):
    with pytest.raises(ValueError, match="error_threshold"):
        parse_error_threshold(raw)


def test_delimiters_and_encodings():
    assert [parse_delimiter(d) for d in (";", "tab", "\t", "|")] == [";", "\t", "\t", "|"]
    for bad in ('"', "ab", "\n", "a"):
        with pytest.raises(ValueError, match="delimiter"):
            parse_delimiter(bad)
    assert canonical_encoding("Latin-1") == "iso8859-1"
    assert canonical_encoding("UTF8") == "utf-8"
    assert canonical_encoding("windows-1252") == "cp1252"
    # not text encodings of a file, or not ASCII-compatible: refused by the allow-list
    for bad in ("utf-16", "utf-7", "raw_unicode_escape", "unicode_escape", "idna", "rot13"):
        with pytest.raises(ValueError, match="not supported"):
            canonical_encoding(bad)
    with pytest.raises(ValueError, match="unknown"):
        canonical_encoding("no-such-codec")


def test_unused_path_is_harmless(tmp_path: Path):
    assert ImporterRegistry(tmp_path / "missing").importers() == {}
