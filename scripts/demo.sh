#!/usr/bin/env bash
# Set up and run the main job on the embedded local stack, then show some users' features.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
fs=.venv/bin/featurestream
$fs up
$fs submit features
$fs generate --events 5000 --users 200 --seed 7
echo "waiting for the job to materialize the features ..."
for _ in $(seq 1 60); do
  if [ "$($fs features --limit 5 | grep -c as_of || true)" -ge 5 ]; then break; fi
  sleep 2
done
$fs features --limit 5
$fs status
