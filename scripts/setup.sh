#!/usr/bin/env bash
# Creates .venv (if missing) and installs lstmcast with pinned versions. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lstmcast needs Python 3.11 or newer")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.lstmcast-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${1:-run}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  if [ "${1:-run}" = dev ]; then extra=".[dev]"; else extra=".[postgres]"; fi
  .venv/bin/python -m pip install -q -c constraints.txt -e "$extra"
  echo "$want" > "$stamp"
fi
