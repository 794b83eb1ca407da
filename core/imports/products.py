"""The built-in ``products`` importer: one small module, as every importer should be."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from core.imports.importer import Importer
from core.models import Product


class ProductRow(BaseModel):
    """One row of a products CSV. Blank cells of optional columns are NULL."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64, description="Stock keeping unit (the key).")
    name: str = Field(min_length=1, max_length=255, description="Display name.")
    description: str | None = Field(default=None, max_length=10_000)
    price: Decimal | None = Field(
        default=None, ge=0, max_digits=12, decimal_places=2, description="Decimal, 2 places."
    )
    quantity: int | None = Field(default=None, ge=0, le=2_147_483_647, description="Stock count.")
    category: str | None = Field(default=None, max_length=255)
    updated_at: datetime | None = Field(
        default=None, description="ISO-8601 date or date-time; without an offset it is UTC."
    )


IMPORTER = Importer(
    name="products",
    description="Product catalogue rows, upserted by sku.",
    table=Product.__table__,  # type: ignore[arg-type]
    key=("sku",),
    row_model=ProductRow,
    written_at_column="imported_at",
)
