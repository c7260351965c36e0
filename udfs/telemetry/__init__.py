"""Telemetry: the catalog of exported metrics and drift against training."""
