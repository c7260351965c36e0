#!/usr/bin/env bash
# Set up and run the pipeline on the embedded local stack: the feature job, a trained model and
# the scoring job; then show some users' features and a few scored events, and check that the
# scores and rows equal an offline replay of the events (featurestream verify).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
fs=.venv/bin/featurestream
$fs up
$fs submit features
$fs train
$fs submit scoring
$fs generate --events 5000 --users 200 --seed 7 --labels .featurestream-demo-labels.csv
echo "waiting for the feature job to materialize features ..."
for _ in $(seq 1 60); do
  if [ "$($fs features --limit 5 | grep -c as_of || true)" -ge 5 ]; then break; fi
  sleep 2
done
$fs features --limit 5
echo "a few scored events (scores are committed with each checkpoint):"
$fs consume scores --from-beginning --limit 5 --timeout 60
echo "online against offline (0 differ expected):"
$fs verify --dead-letters .featurestream-demo-dead-letters.jsonl
$fs status
