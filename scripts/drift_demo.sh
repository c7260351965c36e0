#!/usr/bin/env bash
# Drift, live, on a fresh local stack: the feature job, a model trained on the stream's own
# history (its sidecar records the training distribution), the scoring job and the reader; then
# the stream continues, and after 30 s the purchase amounts of half the users are tripled.
# Watch http://127.0.0.1:8000/ui (the model's drift table), or the lines printed every 15 s
# (`featurestream drift`): PSI(amount) stays low, then passes 0.2 (drift) within a minute of the
# shift. The stack stays up afterwards (`featurestream down` stops it). About 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
fs=.venv/bin/featurestream
export FEATURESTREAM_DRIFT_WINDOW_MS="${FEATURESTREAM_DRIFT_WINDOW_MS:-60000}"
labels=.featurestream-demo-drift-labels.csv  # ignored by git, as demo.sh's
# The same users and seed for the history and the live stream (same catalogue), and the same
# density of event time: a burst (`--rate 0`) is 100 events per simulated second.
stream=(--users 2000 --seed 1)
$fs down  # a fresh stack: an empty events topic, no jobs
$fs up
$fs submit features
echo "the history: 100,000 events (about 17 minutes of event time, ending now) ..."
$fs generate --events 100000 "${stream[@]}" --labels "$labels"
$fs train --history kafka:events --labels "$labels"
$fs submit scoring
$fs serve &
reader=$!
trap 'kill "$reader"' EXIT
echo "status page: http://127.0.0.1:8000/ui -- the stream continues at 100 events/s; amounts"
echo "x3 for half the users after 30 s (drift window: $FEATURESTREAM_DRIFT_WINDOW_MS ms)"
$fs generate --events 12000 --skip 100000 "${stream[@]}" --rate 100 \
  --shift-amount 3 --shift-users 0.5 --shift-after 3000 >/dev/null &
generator=$!
while kill -0 "$generator" 2>/dev/null; do
  sleep 15
  echo "--- $(date +%T)"
  $fs drift | grep -E '^(purchase_risk|v[0-9]|  (feature|amount) )' || true
done
wait "$generator"
$fs drift
