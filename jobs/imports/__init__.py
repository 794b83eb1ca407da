"""CSV imports: the loading machinery. Importer definitions live in ``core.imports``."""
