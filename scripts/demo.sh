#!/usr/bin/env bash
# One command for a newcomer: set up, then run the whole pipeline on the embedded SQLite demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/lstmcast demo "$@"
