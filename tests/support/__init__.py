"""Helpers shared by DSD's tests (waiting on conditions, cluster access)."""
