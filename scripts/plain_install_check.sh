#!/usr/bin/env bash
# A plain `pip install .` (no extras: no psycopg, pgpq or ADBC, as in a slim container image) into its own
# virtual environment, then the SQLite demo pipeline end to end from that install, outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
venv=.venv-plain
had_build="$([ -e build ] && echo yes || true)"
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -c constraints.txt .
"$venv/bin/python" - <<'PY'
import importlib.util
present = [m for m in ("psycopg", "pgpq", "adbc_driver_postgresql") if importlib.util.find_spec(m)]
assert not present, f"a plain install should not have {present}"
PY
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"  # the installed package, not the checkout, and its data files
PREFECT_SERVER_ANALYTICS_ENABLED=false "$OLDPWD/$venv/bin/lstmcast" demo --db-url "sqlite:///$work/demo.db"
[ -n "$had_build" ] || rm -rf "$OLDPWD/build"  # what setuptools left building the wheel
echo "plain install check: the SQLite demo ran from 'pip install .' without the postgres extra"
