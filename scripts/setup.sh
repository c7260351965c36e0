#!/usr/bin/env bash
# Install everything featurestream needs on a fresh Debian machine: system packages (Java for
# Flink, a JDK for the connector jar, redis-server; promtool, from Debian's prometheus package,
# checks the alert rules; chromium renders the status page in its test) and the project in
# ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get"
  # Only the programs are wanted: no service may start (prometheus would listen on :9090).
  guard=/usr/sbin/policy-rc.d
  [ -e "$guard" ] || { printf '#!/bin/sh\nexit 101\n' > "$guard"; chmod +x "$guard"; trap 'rm -f "$guard"' EXIT; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import featurestream, pyflink, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing featurestream and its dependencies into .venv (about a minute)"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi
echo "setup: ready"
