#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g. -m "not slow" for the quick part only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --test
venv=${IBSD_VENV:-.venv}
echo "Linting (ruff, settings in pyproject.toml)"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
