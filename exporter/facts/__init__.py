"""The typed facts each collector hands to the verdict, one module per collector: frozen records
that import only the leaves below them, so the diagnosis reads them without importing a collector."""
