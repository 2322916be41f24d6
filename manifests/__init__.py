"""Parquet schemas, source readers and recipe data."""
