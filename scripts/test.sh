#!/usr/bin/env bash
# Every check: ruff, then mypy and the import contracts (scripts/checks.py), then the tests of
# every tier, fastest first (unit; then redis and flink on real servers: a private stack of
# tansu, redis-server and a Flink session cluster on free ports, in a temporary home).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m unit` (tiers: tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python scripts/checks.py
exec .venv/bin/python -m pytest --durations=40 tests/unit tests/integration tests/faults "$@"
