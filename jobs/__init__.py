"""Flink jobs: entry points (``python -m jobs.<name>``), their operators and their submission."""
