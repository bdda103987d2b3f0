"""Ingest of customer data (CSV, Parquet, JSON rows), validated against the catalog, stored encrypted."""
