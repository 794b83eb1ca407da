"""Importers for tests, read from declaration files like the platform reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.imports.declaration import parse_declaration, read_declaration
from core.imports.importer import Importer
from core.settings import BUILTIN_IMPORTERS_DIR

DATA = Path(__file__).resolve().parent / "data"
PRODUCTS = read_declaration(BUILTIN_IMPORTERS_DIR / "products.yaml")


def declared(name: str = "things", **declaration: Any) -> Importer:
    """An importer from a declaration given as keyword arguments (the parsed file)."""
    return parse_declaration(name, declaration)
