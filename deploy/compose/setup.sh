#!/bin/sh
# The compose stack's one-shot setup (docker-compose.yml, service `setup`): wait until the
# JobManager has both TaskManagers, train a first model into the shared registry if it has
# none, then submit the feature and scoring jobs, each unless it runs already (so another
# `docker compose up` does not start a second copy).
set -eu
echo "setup: waiting for the JobManager at $FEATURESTREAM_FLINK_REST_URL and 2 TaskManagers ..."
python - <<'PY'
import os, time
from featurestream.flink_rest import FlinkRest
rest, deadline = FlinkRest(os.environ["FEATURESTREAM_FLINK_REST_URL"]), time.monotonic() + 300
while (rest.call_if_up("/overview") or {}).get("taskmanagers", 0) < 2:
    if time.monotonic() > deadline:
        raise SystemExit("setup: no JobManager with 2 TaskManagers after 300 s: "
                         "see `docker compose logs jobmanager taskmanager`")
    time.sleep(2)
PY
if ls "$FEATURESTREAM_MODELS_DIR"/*-v*.json >/dev/null 2>&1; then
  echo "setup: the model registry has a version already"
else
  featurestream train
fi
for job in features scoring; do
  if python -c "
import os, sys
from featurestream.flink_rest import FlinkRest
from featurestream.jobs import JOB_NAMES
sys.exit(0 if FlinkRest(os.environ['FEATURESTREAM_FLINK_REST_URL']).running_job(JOB_NAMES['$job']) else 1)"; then
    echo "setup: the $job job runs already"
  else
    featurestream submit "$job"
  fi
done
echo "setup: done"
