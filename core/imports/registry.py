"""The importer registry: name -> Importer. Adding an importer is one module plus one line
here (and a migration for its table)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.errors import InvalidRequest
from core.imports import products
from core.imports.importer import Importer

IMPORTERS: Mapping[str, Importer] = MappingProxyType(
    {importer.name: importer for importer in (products.IMPORTER,)}
)


def get_importer(name: str, registry: Mapping[str, Importer] = IMPORTERS) -> Importer:
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise InvalidRequest(
            f"Unknown importer {name!r}; known importers: {known}.", where={"field": "importer"}
        ) from None
