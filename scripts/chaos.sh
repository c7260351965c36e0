#!/usr/bin/env bash
# The chaos report: run the fault scenarios (tests/faults) on a private real stack and print
# one row per scenario: events in, rows checked, mismatches, lost, duplicated, recovery time.
# The table is also written to build/test-artefacts/chaos.md (docs/reliability.md holds the
# latest). Extra arguments go to pytest, e.g. `scripts/chaos.sh -k redis`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest tests/faults -p no:cacheprovider -q "$@"
