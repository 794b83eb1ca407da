"""CSV importers: declarations, registry, parameters, failure codes, rejected rows."""
