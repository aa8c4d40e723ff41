#!/usr/bin/env bash
# One command for a contributor (and CI): set up with the dev extras, lint, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests. Locally that is a -k filter that matches nothing: not a
# failure. In CI it means the suite did not run (a bad path, a broken selection): never green.
if [ "$rc" -eq 5 ]; then
  case "${CI:-}" in
    [Tt][Rr][Uu][Ee] | 1)
      echo "scripts/test.sh: pytest collected no tests (exit 5); under CI=${CI} that fails the run" >&2
      exit 5
      ;;
  esac
  echo "scripts/test.sh: pytest collected no tests (exit 5); treated as success outside CI" >&2
  exit 0
fi
if [ "$rc" -eq 0 ]; then
  case "${CI:-}" in
    # the demo from a plain `pip install .` without the postgres extra, as a slim image installs it
    [Tt][Rr][Uu][Ee] | 1) bash scripts/plain_install_check.sh || exit $? ;;
  esac
fi
exit "$rc"
