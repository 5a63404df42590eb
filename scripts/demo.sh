#!/usr/bin/env bash
# Set everything up, then train and test a student on the built-in default data set.
# Extra arguments go to ibsd-demo (see: .venv/bin/ibsd-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${IBSD_VENV:-.venv}/bin/ibsd-demo" "$@"
