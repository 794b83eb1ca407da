"""The importer registry and definitions: what GET /v1/importers shows and the loader uses."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator

from core.errors import InvalidRequest
from core.imports.importer import ColumnKind, Importer, normalise_header
from core.imports.options import canonical_encoding, parse_delimiter, parse_error_threshold
from core.imports.registry import IMPORTERS, get_importer
from core.models import Product

PRODUCTS = Product.metadata.tables["products"]


def test_products_importer_matches_its_table():
    products = get_importer("products")
    assert products.key == ("sku",)
    assert products.required_columns == ("sku", "name")
    kinds = {column.name: column.kind for column in products.columns}
    assert kinds["price"] is ColumnKind.decimal
    assert kinds["updated_at"] is ColumnKind.datetime
    price = products.column("price")
    assert (price.ge, price.max_digits, price.decimal_places) == (0, 12, 2)
    price_type = PRODUCTS.c.price.type
    assert isinstance(price_type, sa.Numeric)
    assert (price_type.precision, price_type.scale) == (12, 2)
    assert all(column.fully_described for column in products.columns)


def test_unknown_importer_is_an_invalid_request():
    with pytest.raises(InvalidRequest) as error:
        get_importer("nope")
    assert "products" in error.value.message
    assert set(IMPORTERS) == {"products"}


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


def test_importer_refuses_definitions_the_loader_cannot_honour():
    class WithValidator(BaseModel):
        sku: str
        name: str

        @field_validator("name")
        @classmethod
        def shout(cls, value: str) -> str:
            return value.upper()

    with pytest.raises(ValueError, match="per-field"):
        Importer("x", "x", PRODUCTS, ("sku",), WithValidator)

    class OptionalKey(BaseModel):
        sku: str | None = None

    with pytest.raises(ValueError, match="required string"):
        Importer("x", "x", PRODUCTS, ("sku",), OptionalKey)

    class UnknownColumn(BaseModel):
        sku: str
        colour: str | None = None

    with pytest.raises(ValueError, match="colour"):
        Importer("x", "x", PRODUCTS, ("sku",), UnknownColumn)


def test_constraints_that_are_not_understood_disable_the_fast_path():
    class Patterned(BaseModel):
        sku: str = Field(pattern=r"^[A-Z]+$")
        price: Decimal | None = Field(default=None, gt=0)

    importer = Importer(
        "x",
        "x",
        sa.Table("products", sa.MetaData(), *[sa.Column(n, sa.Text) for n in ("sku", "price")]),
        ("sku",),
        Patterned,
    )
    assert not importer.column("sku").fully_described
    assert not importer.column("price").fully_described


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
    for bad in ("utf-16", "no-such-codec"):
        with pytest.raises(ValueError, match="encoding"):
            canonical_encoding(bad)
