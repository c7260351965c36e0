#!/usr/bin/env bash
# Run the whole test suite: lint, unit tests, then integration tests on a real stack
# (tansu, redis-server and a Flink session cluster on free ports, in a temporary home).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest tests "$@"
