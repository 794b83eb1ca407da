"""BulkLoader against real PostgreSQL: direct COPY for new keys, staged upsert otherwise,
exact inserted / updated / unchanged counts, insert mode and dry runs."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core import db
from core.imports.ddl import TableInfo, ensure_table
from core.models import Product
from jobs.imports.batch_plan import plan_batch
from jobs.imports.bulk_load import BulkLoader, LoadResult
from jobs.imports.csv_source import RawBatch
from jobs.imports.prepared_batch import PreparedBatch
from jobs.imports.row_validation import RowValidator
from tests.declared import PRODUCTS, declared


def _plan(header, rows, mode="upsert") -> PreparedBatch:
    columns = [PRODUCTS.column(name) for name in header]
    numbers = list(range(2, 2 + len(rows)))
    checked = RowValidator(columns).check(rows, numbers)
    plan = plan_batch(checked, key_positions=[header.index("sku")], key_names=["sku"], mode=mode)
    raw = RawBatch(rows, numbers, [], 2, 1 + len(rows), 0, True)
    return PreparedBatch.of(raw, checked, plan, keep_keys=mode == "insert")


def _load(sessions, loader, plan) -> LoadResult:
    with db.transaction(sessions) as session:
        result: LoadResult = loader.load(session, plan)
        return result


def _table(sessions) -> dict[str, tuple[Any, ...]]:
    with db.transaction(sessions) as session:
        rows = session.execute(
            sa.select(
                Product.sku, Product.name, Product.price, Product.quantity, Product.imported_at
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows}


HEADER = ["sku", "name", "price", "quantity"]
TABLE = TableInfo(created=False, written_at="imported_at")


def test_upsert_counts_and_direct_copy(sessions):
    loader = BulkLoader(PRODUCTS, TABLE, HEADER, mode="upsert", dry_run=False)
    first = _load(sessions, loader, _plan(HEADER, [["A", "a", "1.00", "1"], ["B", "b", "", ""]]))
    assert (first.inserted, first.changed, first.unchanged) == (2, 0, 0)
    stamped = _table(sessions)["A"][3]

    # A changes, B is identical, C is new: the direct COPY meets A and B and falls back.
    plan = _plan(HEADER, [["A", "a2", "1.00", "1"], ["B", "b", "", ""], ["C", "c", "3", "3"]])
    second = _load(sessions, loader, plan)
    assert (second.inserted, second.changed, second.unchanged) == (1, 1, 1)
    table = _table(sessions)
    assert table["A"][0] == "a2"
    assert table["A"][3] > stamped  # rewritten
    assert table["B"][3] == stamped  # identical: not rewritten

    again = _load(sessions, loader, plan)
    assert (again.inserted, again.changed, again.unchanged) == (0, 0, 3)


def test_columns_absent_from_the_file_are_left_alone(sessions):
    loader = BulkLoader(PRODUCTS, TABLE, HEADER, mode="upsert", dry_run=False)
    _load(sessions, loader, _plan(HEADER, [["A", "a", "9.99", "5"]]))
    narrow = BulkLoader(PRODUCTS, TABLE, ["name", "sku"], mode="upsert", dry_run=False)
    result = _load(sessions, narrow, _plan(["name", "sku"], [["renamed", "A"]]))
    assert (result.inserted, result.changed) == (0, 1)
    name, price, quantity, _ = _table(sessions)["A"]
    assert (name, str(price), quantity) == ("renamed", "9.99", 5)


def test_insert_mode_reports_existing_keys(sessions):
    _load(
        sessions,
        BulkLoader(PRODUCTS, TABLE, HEADER, mode="upsert", dry_run=False),
        _plan(HEADER, [["A", "a", "", ""]]),
    )
    loader = BulkLoader(PRODUCTS, TABLE, HEADER, mode="insert", dry_run=False)
    result = _load(
        sessions, loader, _plan(HEADER, [["A", "new", "", ""], ["D", "d", "", ""]], mode="insert")
    )
    assert (result.inserted, result.existing) == (1, ["A"])
    assert _table(sessions)["A"][0] == "a"


def test_dry_run_writes_nothing(sessions):
    _load(
        sessions,
        BulkLoader(PRODUCTS, TABLE, HEADER, mode="upsert", dry_run=False),
        _plan(HEADER, [["A", "a", "", ""]]),
    )
    plan = _plan(HEADER, [["A", "x", "", ""], ["E", "e", "", ""]], mode="insert")
    result = _load(sessions, BulkLoader(PRODUCTS, TABLE, HEADER, mode="insert", dry_run=True), plan)
    assert (result.inserted, result.existing) == (0, ["A"])
    upsert = _load(sessions, BulkLoader(PRODUCTS, TABLE, HEADER, mode="upsert", dry_run=True), plan)
    assert upsert == LoadResult()
    hidden = BulkLoader(PRODUCTS, TABLE, HEADER, mode="insert", dry_run=True, reveal_table=False)
    assert _load(sessions, hidden, plan) == LoadResult()  # the table's keys stay unknown
    assert set(_table(sessions)) == {"A"}


ORDERS = declared(
    "orders",
    table="bulk_orders",
    schema={
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "Ref No", "constraints": {"unique": True}},
        ],
        "primaryKey": ["id"],
    },
)


def _orders_batch(rows, mode="upsert"):
    header = ["id", "Ref No"]
    columns = [ORDERS.column(name) for name in header]
    numbers = list(range(2, 2 + len(rows)))
    checked = RowValidator(columns, keys=ORDERS.key).check(rows, numbers)
    plan = plan_batch(checked, key_positions=[0], key_names=["id"], mode=mode)
    raw = RawBatch(rows, numbers, [], 2, 1 + len(rows), 0, True)
    return PreparedBatch.of(raw, checked, plan, keep_keys=True)


def test_unique_fields_are_checked_against_the_batch_and_the_table(sessions):
    with db.transaction(sessions) as session:
        session.execute(sa.text("DROP TABLE IF EXISTS bulk_orders"))
        table = ensure_table(session, ORDERS)
    assert table.created
    loader = BulkLoader(ORDERS, table, ["id", "Ref No"], mode="upsert", dry_run=False)
    _load(sessions, loader, _orders_batch([["10", "R-10"]]))
    batch = _orders_batch([["11", "R-11"], ["12", "R-11"], ["13", "R-10"], ["10", "R-10"]])
    result = _load(sessions, loader, batch)
    assert result.not_unique == [(1, "Ref No"), (2, "Ref No")]
    assert (result.inserted, result.changed, result.unchanged) == (1, 0, 1)
    with db.transaction(sessions) as session:
        rows = session.execute(sa.text('SELECT id, "Ref No" FROM bulk_orders ORDER BY id'))
        assert [tuple(row) for row in rows] == [(10, "R-10"), (11, "R-11")]
        session.execute(sa.text("DROP TABLE bulk_orders"))
