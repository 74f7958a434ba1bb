#!/usr/bin/env bash
# The README's test command: installs what the tests need (Python deps, the
# Kafka broker, the Pub/Sub emulator, Prism, the Flink job server and expansion
# service jars), starts the services, runs lint and the whole test suite, and
# stops the services again. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${STREAMSIFT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"
export PATH="$PWD/$VENV/bin:$PATH"
export VIRTUAL_ENV="$PWD/$VENV"

if [ -f scripts/services.sh ] && [ "${STREAMSIFT_SKIP_SERVICES:-0}" != "1" ]; then
  bash scripts/services.sh install
  bash scripts/services.sh start
  trap 'bash scripts/services.sh stop || true' EXIT
  eval "$(bash scripts/services.sh env)"
fi

echo "== ruff"
ruff check .
ruff format --check .

echo "== pytest"
pytest "$@"
