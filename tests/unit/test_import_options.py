"""ImportOptions (core.imports.options): the one validation of what an import request may
choose, behind both the POST /v1/imports form and an import schedule's ``options``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.schemas.imports import ImportForm
from core.errors import InvalidRequest
from core.imports.importer import Importer
from core.imports.options import ImportOptions, StoredFile

UPLOAD = StoredFile(path="-", sha256="-", size=0)
KEYED = Importer(name="products", table="products", mode="upsert", key=("sku",), columns=())
KEYLESS = Importer(name="events", table="events", mode="insert", key=(), columns=())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"error_threshold": "5%"}, {"error_threshold": 0.05}),  # as a form sends it
        ({"error_threshold": 100}, {"error_threshold": 100}),  # as JSON sends it
        ({"error_threshold": " "}, {}),
        ({"delimiter": "\t"}, {"delimiter": "\t"}),  # a tab is a delimiter, not padding
        ({"delimiter": " ; ", "encoding": " latin-1 "}, {"delimiter": ";", "encoding": "latin-1"}),
        ({"delimiter": "", "encoding": "  "}, {}),  # blank: not given
    ],
)
def test_form_and_json_values_read_alike(given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert ImportOptions.model_validate(given).model_dump(exclude_none=True) == expected
    form = ImportForm.model_validate({"importer": " products ", **given})
    assert form.importer == "products"
    assert form.model_dump(exclude_none=True) == {
        "importer": "products",
        "dry_run": False,
        **expected,
    }


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"mode": "merge"}, "mode"),
        ({"error_threshold": "lots"}, "error_threshold"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_refused_options_name_their_field(given: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ImportOptions.model_validate(given)
    assert refused.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("given", "field"),
    [({"delimiter": "ab"}, "delimiter"), ({"encoding": "utf-16"}, "encoding")],
)
def test_params_checks_what_the_worker_reads(given: dict[str, Any], field: str) -> None:
    options = ImportOptions.model_validate(given).for_importer(KEYED, field="mode")
    with pytest.raises(ValidationError) as refused:
        options.params(importer="products", upload=UPLOAD, reveal_table=True)
    assert refused.value.errors()[0]["loc"] == (field,)


def test_the_mode_defaults_to_the_importers_and_upsert_needs_a_key() -> None:
    assert ImportOptions().for_importer(KEYED, field="mode").mode == "upsert"
    assert ImportOptions().for_importer(KEYLESS, field="mode").mode == "insert"
    with pytest.raises(InvalidRequest) as refused:
        ImportOptions(mode="upsert").for_importer(KEYLESS, field="job.options.mode")
    assert refused.value.where == {"field": "job.options.mode"}
    params = (
        ImportOptions.model_validate({"delimiter": "tab", "error_threshold": "3"})
        .for_importer(KEYLESS, field="mode")
        .params(importer="events", upload=UPLOAD, reveal_table=False, dry_run=True)
    )
    assert (params.mode, params.delimiter, params.error_threshold) == ("insert", "\t", 3)
    assert (params.dry_run, params.reveal_table) == (True, False)


def test_the_import_form_makes_the_same_params() -> None:
    form = ImportForm.model_validate({"importer": "products", "dry_run": "true", "delimiter": ";"})
    params = form.for_importer(KEYED, field="mode").params(
        importer="products", upload=UPLOAD, reveal_table=True, dry_run=form.dry_run
    )
    assert (params.importer, params.dry_run, params.delimiter) == ("products", True, ";")
